"""The edge checks, tested over classes of input rather than examples."""
from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.validation import TextRejected, check_secret, check_text, secret_problem, text_problem

PRINTABLE_ASCII = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=200)


@given(PRINTABLE_ASCII)
def test_every_printable_ascii_secret_passes_unchanged(key):
    assert check_secret(key) == key


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=16, max_size=200),
       st.sampled_from(["\n", "\r\n", " ", "\t", "\x00", "\x7f", "é", "\u2028", "\ud800"]),
       st.sampled_from(["prefix", "suffix", "middle"]))
def test_a_secret_with_whitespace_control_or_non_ascii_is_refused_without_echoing_it(key, bad, where):
    mangled = {"prefix": bad + key, "suffix": key + bad, "middle": key[:1] + bad + key[1:]}[where]
    problem = secret_problem(mangled)
    assert problem is not None
    assert key not in problem and mangled not in problem


def test_an_empty_or_huge_secret_is_refused():
    with pytest.raises(TextRejected):
        check_secret("")
    with pytest.raises(TextRejected, match="longer than 4096"):
        check_secret("k" * 4097)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=64))
def test_text_without_controls_within_its_length_passes(value):
    assert check_text(value, 64) == value


@given(st.text(max_size=20), st.sampled_from([chr(c) for c in range(0x20)] + ["\x7f"]), st.text(max_size=20))
def test_any_control_character_is_refused_in_single_line_text(before, control, after):
    assert text_problem(before + control + after, 100) is not None


def test_multiline_text_keeps_line_breaks_and_tabs_but_not_nul():
    assert text_problem("line one\r\nline\ttwo", 100, multiline=True) is None
    assert text_problem("a\x00b", 100, multiline=True) == "contains a NUL character"


@given(st.integers(min_value=1, max_value=300))
def test_length_is_bounded(length):
    problem = text_problem("m" * length, 128)
    assert (problem is None) == (length <= 128)


def test_lone_surrogates_are_not_text():
    assert text_problem("abc\ud800", 10) == "is not valid Unicode"
    assert string.printable  # the module is importable without a database
