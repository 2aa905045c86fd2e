"""probe.jsontext: orjson's speed, json's reach: every value json wrote still goes out and reads
back the same, the same text for sorted keys, and what orjson refuses falls back to json."""

import json

import numpy as np
import pytest

from probe import jsontext

RECORD = {"b": [1, 2.5, None, True], "a": {"z": "ünïcode ✓", "y": (1, 2)}, "c": -0.0,
          "d": 1e-7, "e": 12345678901234567, "f": "line\nbreak \"quoted\" \\ \u2028"}


def test_text_is_jsons_compact_sorted_text():
    plain = {k: v for k, v in RECORD.items() if k != "d"}
    assert jsontext.dumps(plain, sort_keys=True) == json.dumps(
        plain, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    # floats may be spelled otherwise (1e-7, json: 1e-07): the same value comes back
    assert json.loads(jsontext.dumps(RECORD)) == json.loads(json.dumps(RECORD))


def test_integers_beyond_64_bits_fall_back_to_json():
    big = {"content_length": 2**70 + 1, "negative": -(2**65)}
    text = jsontext.dumps(big)
    assert json.loads(text) == big


def test_numpy_scalars_are_plain_numbers():
    text = jsontext.dumps({"p": np.float64(0.25), "n": np.int64(7)})
    assert json.loads(text) == {"p": 0.25, "n": 7}


def test_non_string_keys_are_written_as_json_writes_them():
    assert json.loads(jsontext.dumps({1: "a", 2.5: "b"})) == {"1": "a", "2.5": "b"}


def test_what_neither_can_encode_raises_type_error():
    with pytest.raises(TypeError):
        jsontext.dumps({"s": {1, 2}})
