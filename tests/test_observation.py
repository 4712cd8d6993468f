"""The observation contract: strict (an unknown field is an error), immutable once made, and its
JSON carries the embedding as base64."""

import pydantic
import pytest
from helpers.observations import observation

from retrofit_agent.observation import Observation
from retrofit_agent.transport.protocol import Ack, Batch


def test_unknown_fields_are_errors_and_a_made_observation_is_immutable():
    made = observation(3)
    data = made.model_dump()
    with pytest.raises(pydantic.ValidationError, match="extra"):
        Observation.model_validate({**data, "colour": "red"})
    with pytest.raises(pydantic.ValidationError, match="extra"):
        Observation.model_validate({**data, "top": {"weather": {**data["labels"][0], "x": 1}}})
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        made.seq = 4
    assert Observation.model_validate_json(made.model_dump_json()) == made  # base64 round trip


def test_the_request_is_strict_the_answer_lets_servers_add_fields():
    with pytest.raises(pydantic.ValidationError, match="extra"):
        Batch.model_validate({"protocol": 1, "batch_id": "b", "rows": [{}], "note": "x"})
    ack = Ack.model_validate(
        {
            "protocol": 1,
            "batch_id": "b",
            "accepted": [1],
            "rejected": [{"seq": 2, "error": "bad", "field": "source"}],
            "server_time": "2026-11-29T12:00:00Z",
        }
    )
    assert (ack.accepted, ack.rejected[0].seq) == ([1], 2)
