"""Lesson Markdown -> the plain-text twin, the HTML fragment and the located links."""

from __future__ import annotations

import textwrap

import pytest

from newsletter.content.markdown import Link, links_in, to_html, to_text


def md(text: str) -> str:
    return textwrap.dedent(text)


# --- plain text ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "text"),
    [
        (
            "Read [the study](https://example.org/study) today.",
            "Read the study <https://example.org/study> today.\n",
        ),
        (
            "See [a `code` word](https://example.org/a) and [mail](mailto:me@example.org).",
            "See a code word <https://example.org/a> and mail <mailto:me@example.org>.\n",
        ),
        # An address that is its own text is written once.
        ("Go to <https://example.org/raw> now.", "Go to https://example.org/raw now.\n"),
    ],
)
def test_to_text_writes_links_after_their_words(source: str, text: str) -> None:
    assert to_text(source) == text


def test_to_text_keeps_a_tight_list_on_consecutive_lines() -> None:
    source = md(
        """\
        Before the list.

        - one
        - two
        - three

        After the list.
        """
    )

    assert to_text(source) == "Before the list.\n\n- one\n- two\n- three\n\nAfter the list.\n"


def test_to_text_keeps_blank_lines_of_a_loose_list() -> None:
    assert to_text("- one\n\n- two\n") == "- one\n\n- two\n"


def test_to_text_numbers_an_ordered_list_from_its_start() -> None:
    assert to_text("3. three\n4. four\n") == "3. three\n4. four\n"


def test_to_text_indents_the_wrapped_lines_of_a_list_item() -> None:
    assert to_text("- first line  \n  second line\n- next\n") == (
        "- first line\n  second line\n- next\n"
    )


def test_to_text_keeps_a_nested_tight_list_on_consecutive_lines() -> None:
    source = "- fruit\n  - apple\n  - pear\n- bread\n"

    assert to_text(source) == "- fruit\n  - apple\n  - pear\n- bread\n"


def test_to_text_underlines_headings() -> None:
    source = "# Big title\n\nSome text.\n\n## Next part\n\nMore text.\n"

    assert to_text(source) == (
        "Big title\n---------\n\nSome text.\n\nNext part\n---------\n\nMore text.\n"
    )


def test_to_text_underline_stops_at_sixty_characters() -> None:
    heading = "word " * 15

    assert to_text(f"# {heading}\n").split("\n")[1] == "-" * 60


def test_to_text_drops_emphasis_marks_and_keeps_quotes_and_code() -> None:
    source = "Some **bold** and *soft* words.\n\n> A quote\n> on two lines\n\n    code here\n"

    assert to_text(source) == (
        "Some bold and soft words.\n\n> A quote on two lines\n\n    code here\n"
    )


# --- links ------------------------------------------------------------------------------


def test_links_in_gives_url_text_and_line() -> None:
    source = md(
        """\
        # Sources

        Read [the study](https://example.org/study) first.

        - [Omega-3 `news`](https://example.org/omega)
        - no link here
        - [write to us](mailto:team@example.org)
        """
    )

    assert links_in(source) == [
        Link(url="https://example.org/study", text="the study", line=3),
        Link(url="https://example.org/omega", text="Omega-3 news", line=5),
        Link(url="mailto:team@example.org", text="write to us", line=7),
    ]


def test_links_in_gives_autolinks_with_their_address_as_text() -> None:
    assert links_in("Intro.\n\nSee <https://example.org/x>.\n") == [
        Link(url="https://example.org/x", text="https://example.org/x", line=3)
    ]


def test_links_in_finds_no_link_in_plain_text() -> None:
    assert links_in("# Title\n\nJust words, `code` and **bold**.\n") == []


def test_links_in_keeps_the_space_of_a_wrapped_link_text() -> None:
    [link] = links_in("See [two\nwords](https://example.org/a) here.\n")

    assert link.text == "two words"


# --- HTML -------------------------------------------------------------------------------


def test_to_html_escapes_raw_html_blocks() -> None:
    html = to_html("Before.\n\n<script>alert('x')</script>\n\nAfter.\n")

    assert "<script>" not in html
    assert "&lt;script&gt;" in html


def test_to_html_escapes_inline_html() -> None:
    html = to_html('Some <b onclick="steal()">bold</b> text.\n')

    assert "<b" not in html
    assert "&lt;b onclick=" in html


def test_to_html_makes_no_javascript_link() -> None:
    html = to_html("[click](javascript:alert(1))\n")

    assert "<a" not in html
    assert "href" not in html


def test_to_html_renders_commonmark() -> None:
    html = to_html("## Part\n\nRead [this](https://example.org/a).\n\n- one\n- two\n")

    assert html == (
        "<h2>Part</h2>\n"
        '<p>Read <a href="https://example.org/a">this</a>.</p>\n'
        "<ul>\n<li>one</li>\n<li>two</li>\n</ul>\n"
    )
