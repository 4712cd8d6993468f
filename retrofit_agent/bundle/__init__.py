"""The model bundle (contract 1) and its label bank (contract 2 as shipped), verified at load."""
