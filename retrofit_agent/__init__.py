"""retrofit-agent: zero-shot image labelling with a distilled CLIP student on car cameras."""

__version__ = "0.1.0"
