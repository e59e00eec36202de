"""Tags and segments through the real CLI: tag by hand and by import, then list who a
segment matches."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import ok

COURSE = "leg-weakness-after-microdiscectomy"


def emails(result: str) -> set[str]:
    return {row["email"] for row in json.loads(result)["subscribers"]}


def test_tags_from_the_cli_and_an_import_select_a_segment(admin, tmp_path: Path):
    ok(admin("sequences", "queue", f"lessons/{COURSE}"))
    ok(admin("subscribers", "add", "ann@example.com", "--enroll", COURSE))
    ok(admin("subscribers", "add", "ben@example.com"))
    people = tmp_path / "people.csv"
    people.write_text(
        "email,first_name,tags\r\n"
        'cy@example.com,Cy,"baker, vip"\r\n'
        "ann@example.com,Ann,baker\r\n"
        "di@example.com,Di,Not A Tag!\r\n",
        encoding="utf-8",
    )

    imported = admin("subscribers", "import", str(people))
    tagged = ok(admin("subscribers", "tag", "ben@example.com", "VIP"))

    # The row with a tag that is no word is refused, named by its file and line.
    assert "people.csv:4: 'Tag!' is not a tag" in imported.stderr
    assert tagged.strip() == "ben@example.com: vip"
    assert emails(ok(admin("subscribers", "list", "--segment", "tag:baker", "--json"))) == {
        "ann@example.com",
        "cy@example.com",
    }
    segment = f"tag:vip and not course:{COURSE}:active"
    assert emails(ok(admin("subscribers", "list", "--segment", segment, "--json"))) == {
        "ben@example.com",
        "cy@example.com",
    }
    shown = json.loads(ok(admin("subscribers", "show", "cy@example.com", "--json")))
    assert shown["tags"] == ["baker", "vip"]
    ok(admin("subscribers", "tag", "cy@example.com", "vip", "--remove"))
    assert emails(ok(admin("subscribers", "list", "--segment", "tag:vip", "--json"))) == {
        "ben@example.com"
    }


def test_a_wrong_segment_is_one_line_naming_the_mistake(admin):
    typo = admin("subscribers", "list", "--segment", "tag:baker and")
    unknown = admin("subscribers", "list", "--segment", "course:no-such-course")

    assert typo.returncode == 1
    assert typo.stderr.strip() == (
        "error: segment 'tag:baker and': at the end: expected a term such as tag:NAME"
    )
    assert unknown.returncode == 1
    assert "no course called no-such-course" in unknown.stderr
    assert "Traceback" not in typo.stderr + unknown.stderr
