"""The model bundle (contract 1: manifest, writer, label bank) and the label set it is built from
(contract 2); verified at load, readable without torch."""
