"""A lesson body can print the documented variables and nothing else: every other Jinja
expression is named at its file line before any of it runs, and the body and the email
templates render in sandboxes that reach no Python internals."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from jinja2 import Environment
from jinja2.exceptions import SecurityError, UndefinedError

from newsletter.content.check import check_course
from newsletter.content.course import load_course
from newsletter.content.template import compile_body
from newsletter.errors import ContentError
from newsletter.render import LESSON_BODY_NAMES, ConfirmationEmail, LessonEmail
from tests.conftest import COURSE_DIR

FRONT = "subject: One more thing\npreheader: A short note that adds to it\ndelay: 1 day"
DOCUMENTED = {
    "first_name",
    "email",
    "unsubscribe_url",
    "preferences_url",
    "course_title",
    "lesson_number",
    "lesson_count",
}


def exploits(proof: Path) -> list[str]:
    """Template injections that would create `proof` (or read internals) if they ran."""
    shell = f"popen('touch {proof}').read()"
    return [
        f"{{{{ lipsum.__globals__['os'].{shell} }}}}",
        f"{{{{ lipsum.__globals__.os.{shell} }}}}",
        f"{{{{ cycler.__init__.__globals__.os.{shell} }}}}",
        f"{{{{ joiner.__init__.__globals__.os.{shell} }}}}",
        f"{{{{ namespace.__init__.__globals__.os.{shell} }}}}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ first_name.__class__.__mro__ }}",
        f"{{% set x = lipsum.__globals__.os.{shell} %}}",
        f"{{% for x in [lipsum.__globals__.os.{shell}] %}}{{{{ x }}}}{{% endfor %}}",
        "{{ first_name|attr('__class__')|attr('__mro__') }}",
        f"{{{{ (lipsum|attr('__globals__')).os.{shell} }}}}",
        "{{ range(10**9)|list }}",
        "{{ dict(a=1) }}",
        "{% include 'base.html' %}",
        "{% extends 'base.html' %}",
        "{% macro m() %}{% endmacro %}",
    ]


@pytest.fixture
def course_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(COURSE_DIR, tmp_path / "course"))


def add_lesson(folder: Path, body: str) -> Path:
    path = folder / "07-extra.md"
    path.write_text(f"---\n{FRONT}\n---\nHello {{{{ first_name }}}},\n\n{body}\n", "utf-8")
    return path


@pytest.mark.parametrize("index", range(len(exploits(Path("x")))))
def test_template_injection_fails_course_check_at_its_line_and_runs_nothing(
    course_copy, env, settings, tmp_path, index
):
    proof = tmp_path / "proof"
    path = add_lesson(course_copy, exploits(proof)[index])

    _, problems = check_course(course_copy, env, settings.sender)

    assert [str(problem).split(": ")[0] for problem in problems] == [f"{path}:8"]
    assert problems[0].is_error
    assert not proof.exists()


def test_the_message_names_what_is_not_allowed(course_copy, env, settings, tmp_path):
    path = add_lesson(course_copy, exploits(tmp_path / "proof")[0])
    [problem] = check_course(course_copy, env, settings.sender)[1]
    assert str(problem) == (
        f"{path}:8: {{{{ }}}} may hold only a variable name; found a call '(...)', "
        "the attribute '.read', the attribute '.popen', an item lookup '[...]', "
        "the attribute '.__globals__', the name 'lipsum'"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{% set x = 1 %}", "the {% set %} tag is not allowed in a lesson; only {{ variable }} is"),
        ("{% if first_name %}Hi{% endif %}", "the {% if %} tag is not allowed"),
        ("{{ first_name|upper }}", "found the filter '|upper'"),
        ("{{ first_name is defined }}", "found the test 'is defined'"),
        ("{{ first_name.upper() }}", "found a call '(...)', the attribute '.upper'"),
        ("{{ email[0] }}", "found an item lookup '[...]'"),
        ("{{ 7 * 7 }}", "found an expression"),
        ("{{ 'text' }}", "found the literal 'text'"),
        ("{{ confirm_url }}", "unknown variable 'confirm_url'"),
        ("{{ lipsum }}", "unknown variable 'lipsum'"),
    ],
)
def test_every_expression_but_a_documented_name_is_a_problem(
    course_copy, env, settings, body, message
):
    path = add_lesson(course_copy, body)
    [problem] = check_course(course_copy, env, settings.sender)[1]
    assert str(problem).startswith(f"{path}:8: ")
    assert message in problem.message


def test_the_documented_variables_are_exactly_the_ones_a_body_may_use():
    assert LESSON_BODY_NAMES == DOCUMENTED
    body = " ".join(f"{{{{ {name} }}}}" for name in sorted(DOCUMENTED)) + "\n"
    values = {name: f"<{name}>" for name in DOCUMENTED}
    rendered = compile_body(Path("l.md"), body, 5, LESSON_BODY_NAMES).render(values)
    assert rendered == " ".join(f"<{name}>" for name in sorted(DOCUMENTED)) + "\n"


def test_raw_blocks_and_comments_are_text_not_code():
    body = "{# a note #}{% raw %}{{ lipsum.__globals__ }}{% endraw %}\n"
    template = compile_body(Path("l.md"), body, 5, LESSON_BODY_NAMES)
    assert template.render() == "{{ lipsum.__globals__ }}\n"


def test_the_body_sandbox_has_no_globals_and_refuses_internals_even_past_the_check():
    sandbox = compile_body(Path("l.md"), "x\n", 1, LESSON_BODY_NAMES).environment
    assert sandbox.globals == {}
    assert sandbox.filters == {}
    with pytest.raises(UndefinedError):
        sandbox.from_string("{{ lipsum }}").render()
    with pytest.raises(SecurityError):
        sandbox.from_string("{{ x.__class__.__mro__ }}").render(x="")
    with pytest.raises(SecurityError):
        sandbox.from_string("{{ x.__init__.__globals__ }}").render(x=compile_body)


def test_the_email_templates_render_in_a_sandbox_without_globals(env):
    assert env.globals == {}
    with pytest.raises(SecurityError):
        env.from_string("{{ sender.__class__.__init__.__globals__ }}").render(sender=env)
    with pytest.raises(SecurityError):
        env.from_string("{{ sender.name.__class__.__mro__ }}").render(sender=env)


def test_emails_refuse_an_environment_without_the_sandbox(settings, course):
    plain = Environment()
    with pytest.raises(TypeError, match="sandbox"):
        LessonEmail(plain, settings.sender, course, course.lessons[0])
    with pytest.raises(TypeError, match="sandbox"):
        ConfirmationEmail(plain, settings.sender, course)


def test_a_lesson_built_from_a_hostile_snapshot_fails_before_running(
    env, settings, course_copy, tmp_path
):
    """What the worker does with a lesson queued before this check existed."""
    proof = tmp_path / "proof"
    add_lesson(course_copy, exploits(proof)[0])
    course = load_course(course_copy)
    with pytest.raises(ContentError, match=r"07-extra.md:8: \{\{ \}\} may hold only"):
        LessonEmail(env, settings.sender, course, course.lesson("extra"))
    assert not proof.exists()
