"""Offline distillation of a CLIP teacher into a small student (needs the [distill] extra).

Imported only by `retrofit-distill` and the tests: the on-device agent never imports torch.
"""
