"""Darknet's .cfg format: sections in order, typed options, and refusals that name the line."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from visionq.errors import ModelError
from visionq.models.darknet_cfg import Section, parse_cfg

CFG = """# a comment line
[net]
width=416   ; a comment after a value
height=320
channels=3

[convolutional]
filters=14
activation=leaky
scale=1.05

[yolo]
mask = 0,1,2
anchors = 10,14,  23,27
"""


def test_sections_come_in_order_with_their_options_and_lines() -> None:
    net, conv, yolo = parse_cfg(CFG)

    assert [s.kind for s in (net, conv, yolo)] == ["net", "convolutional", "yolo"]
    assert (net.int_("width"), net.int_("height"), net.line) == (416, 320, 2)
    assert (conv.int_("filters"), conv.str_("activation"), conv.float_("scale")) == (14, "leaky", 1.05)
    assert yolo.ints("mask") == [0, 1, 2]
    assert yolo.str_("anchors") == "10,14,  23,27"


def test_a_missing_option_takes_its_default_and_one_without_a_default_is_named() -> None:
    _, conv, yolo = parse_cfg(CFG)

    assert (conv.int_("stride", 1), yolo.ints("absent", [5])) == (1, [5])
    with pytest.raises(ModelError, match=r"\[convolutional\] at line 7 lacks 'size'"):
        conv.int_("size")


def test_a_cfg_without_a_net_section_is_refused() -> None:
    with pytest.raises(ModelError, match=r"does not start with a \[net\] section"):
        parse_cfg(CFG.replace("[net]", "[convolutional]", 1))


def test_an_empty_cfg_is_refused() -> None:
    with pytest.raises(ModelError, match=r"\[net\]"):
        parse_cfg("# nothing but a comment\n")


def test_a_line_that_is_not_key_value_is_refused_with_its_line_number() -> None:
    with pytest.raises(ModelError, match=r"cfg line 8: expected 'key=value', got 'filters 14'"):
        parse_cfg(CFG.replace("filters=14", "filters 14"))


def test_an_unclosed_section_header_is_refused() -> None:
    with pytest.raises(ModelError, match=r"cfg line 12: malformed section header '\[yolo'"):
        parse_cfg(CFG.replace("[yolo]", "[yolo"))


@pytest.mark.parametrize(
    ("line", "read"),
    [("filters=fourteen", lambda s: s.int_("filters")), ("scale=big", lambda s: s.float_("scale"))],
)
def test_a_non_numeric_value_is_refused_as_a_model_error(
    line: str, read: Callable[[Section], object]
) -> None:
    key = line.split("=")[0]
    original = next(raw for raw in CFG.splitlines() if raw.startswith(f"{key}="))
    conv = parse_cfg(CFG.replace(original, line))[1]

    with pytest.raises(ModelError, match=rf"'{line}' is not a number"):
        read(conv)


def test_a_list_that_is_not_numbers_is_refused() -> None:
    yolo = parse_cfg(CFG.replace("mask = 0,1,2", "mask = 0,one"))[2]

    with pytest.raises(ModelError, match="is not a list of numbers"):
        yolo.ints("mask")
