"""A small label set (contract 2) for the label-set and label-bank tests."""

from pathlib import Path

MINI = """
templates = ["a photo of {}.", "a picture of {}."]
[groups.weather]
kind = "exclusive"
labels = { clear = "clear weather", rain = ["rain", "a rainy day"] }
[groups.users]
kind = "multi"
threshold = 0.2
templates = ["{} on the road"]
labels = { car = "a car", truck = { phrases = ["a truck"], threshold = 0.3 } }
"""


def write(directory: Path, text: str) -> Path:
    """`text` as directory/labels.toml."""
    path = directory / "labels.toml"
    path.write_text(text)
    return path
