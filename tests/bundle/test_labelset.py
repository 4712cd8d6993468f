"""The label set (contract 2): validation, prompts and thresholds, read without torch."""

import pytest
from helpers.labelsets import MINI, write

from retrofit_agent.bundle.labelset import load_label_set
from retrofit_agent.errors import ConfigError


def test_entries_expand_templates_and_thresholds(tmp_path):
    entries = load_label_set(write(tmp_path, MINI)).entries()
    assert [(g, label, t) for g, label, _, t in entries] == [
        ("weather", "clear", 0.0),
        ("weather", "rain", 0.0),
        ("users", "car", 0.2),
        ("users", "truck", 0.3),
    ]
    assert entries[1][2] == [
        "a photo of rain.",
        "a photo of a rainy day.",
        "a picture of rain.",
        "a picture of a rainy day.",
    ]
    assert entries[2][2] == ["a car on the road"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MINI.replace("truck = {", "car = {"), "invalid TOML"),  # a label twice in one group
        (
            MINI.replace('car = "a car"', 'clear = "a car"'),
            "'clear' is in groups weather and users",
        ),
        (
            MINI.replace('labels = { car = "a car", truck', "labelz = { truck"),
            "groups.users.labelz: unknown key",
        ),
        (
            MINI + '[groups.empty]\nkind = "multi"\nthreshold = 0.2\nlabels = {}\n',
            "groups.empty.labels",
        ),
        (MINI.replace('kind = "multi"', 'kind = "several"'), "groups.users.kind"),
        (MINI.replace("threshold = 0.2\n", ""), "multi group needs a threshold"),
        (MINI.replace('"{} on the road"', '"on the road"'), "exactly one {}"),
    ],
)
def test_bad_label_sets(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_label_set(write(tmp_path, text))


def test_shipped_road_label_set_is_valid():
    from helpers.paths import REPO

    label_set = load_label_set(REPO / "models" / "labels" / "road.toml")
    groups = {name: spec.kind for name, spec in label_set.groups.items()}
    assert groups == {
        "time_of_day": "exclusive",
        "weather": "exclusive",
        "road_type": "exclusive",
        "road_users": "multi",
        "infrastructure": "multi",
    }
    assert all(len(prompts) >= 3 for _, _, prompts, _ in label_set.entries())
