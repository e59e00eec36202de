"""config.toml + NEWSLETTER_* -> Settings, and every mistake as one located line."""

from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from newsletter.config import Settings, load_secret_key, load_settings
from newsletter.errors import ConfigError

SHIPPED_CONFIG = Path(__file__).parents[2] / "config.toml"

#: A minimal valid [sender] table; tests put the table under test above it, so the line
#: numbers they expect are the ones they can count in their own text.
SENDER = """\
[sender]
name = "Garden Notes"
address = "notes@example.org"
unsubscribe_address = "leave@example.org"
postal_address = "1 Garden Row, Springfield"
"""


@pytest.fixture(autouse=True)
def no_newsletter_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own NEWSLETTER_* variables must not leak into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("NEWSLETTER_"):
            monkeypatch.delenv(name)


def write_config(tmp_path: Path, head: str, *, sender: str = SENDER) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(head) + "\n" + sender, encoding="utf-8")
    return path


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return str(caught.value)


# --- the shipped config ---------------------------------------------------------------


def test_shipped_config_loads() -> None:
    settings = load_settings(SHIPPED_CONFIG)

    assert settings.sender.name == "Spine Health Notes"
    assert settings.sender.address == "course@example.org"
    assert settings.sender.transactional_from == "course@example.org"
    assert settings.sender.postal_lines == [
        "Spine Health Notes",
        "1 Example Street",
        "Springfield, ST 12345, USA",
    ]
    assert settings.site.base == "http://localhost:8000"
    assert settings.schedule.zone == ZoneInfo("Europe/London")
    assert settings.smtp.password is None
    assert settings.database.url == f"sqlite:///{SHIPPED_CONFIG.parent / 'var' / 'newsletter.db'}"
    assert settings.lessons_dir == SHIPPED_CONFIG.parent / "lessons"


@pytest.mark.parametrize(
    ("base_url", "base"),
    [
        ("http://localhost:8000", "http://localhost:8000"),
        ("http://localhost:8000/", "http://localhost:8000"),
        ("https://example.org/news/", "https://example.org/news"),
    ],
)
def test_base_url_has_no_trailing_slash(tmp_path: Path, base_url: str, base: str) -> None:
    path = write_config(tmp_path, f'[site]\nbase_url = "{base_url}"\n')

    assert load_settings(path).site.base == base


def test_relative_paths_are_taken_from_the_config_folder(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[paths]\nvar = "state"\n')

    settings = load_settings(path)

    assert settings.var_dir == tmp_path / "state"
    assert settings.templates_dir == tmp_path / "templates" / "emails"


# --- mistakes in the file -------------------------------------------------------------


def test_unknown_key_names_the_key_file_and_line(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
        [smtp]
        host = ""
        prot = 25
        """,
    )

    assert config_error(path) == (
        f"{path}:3: smtp.prot: unknown key "
        "(expected one of: allow_http_links, host, password, port, tls, username)"
    )


def test_unknown_section_lists_the_known_sections(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[smpt]\nhost = ''\n")

    assert config_error(path) == (
        f"{path}:1: smpt: unknown key (expected one of: bounces, database, dkim, inbound, "
        "paths, schedule, secret_key, sender, sending, signup, site, smtp, web)"
    )


def test_trusted_proxies_are_addresses_or_networks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, '[web]\ntrusted_proxies = ["127.0.0.1", "::1", "10.0.0.0/8"]\n')
    assert [str(net) for net in load_settings(path).web.trusted_networks] == [
        "127.0.0.1/32",
        "::1/128",
        "10.0.0.0/8",
    ]
    assert load_settings(SHIPPED_CONFIG).web.trusted_proxies == ()  # none by default

    monkeypatch.setenv("NEWSLETTER_WEB__TRUSTED_PROXIES", '["192.0.2.0/24"]')
    assert load_settings(path).web.trusted_proxies == ("192.0.2.0/24",)


@pytest.mark.parametrize("entry", ["localhost", "10.0.0.1/8", "garbage", "*"])
def test_a_trusted_proxy_that_is_not_an_address_names_its_line(tmp_path: Path, entry: str) -> None:
    path = write_config(tmp_path, f'[web]\nheader_timeout_s = 5\ntrusted_proxies = ["{entry}"]\n')

    message = config_error(path)
    assert message.startswith(f"{path}:3: web.trusted_proxies: ")
    assert f"{entry!r} is not an IP address or network" in message


def test_wrong_type_names_the_key_and_its_line(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
        [smtp]
        host = "mail.example.org"
        port = "abc"
        """,
    )

    message = config_error(path)

    assert message.startswith(f"{path}:3: smtp.port: ")
    assert message.endswith("(got 'abc')")
    assert "\n" not in message


def test_out_of_range_value_names_the_key_and_its_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[smtp]\nport = 70000\n")

    message = config_error(path)

    assert message.startswith(f"{path}:2: smtp.port: input should be less than or equal to 65535")


def test_missing_required_key_names_the_key_at_its_table(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        textwrap.dedent(
            """\
            [site]
            base_url = "https://example.org"

            [sender]
            name = "Garden Notes"
            unsubscribe_address = "leave@example.org"
            postal_address = "1 Garden Row"
            """
        ),
        encoding="utf-8",
    )

    assert config_error(path) == f"{path}:4: sender.address: missing; this key is required"


def test_missing_sender_table_names_the_table_and_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[smtp]\nhost = ""\n', sender="")

    assert config_error(path) == f"{path}: sender: missing; this key is required"


def test_bad_time_zone_names_schedule_timezone(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
        [schedule]
        timezone = "Mars/Olympus_Mons"
        """,
    )

    assert config_error(path) == (
        f"{path}:2: schedule.timezone: expected an IANA time zone such as Europe/London "
        "(got 'Mars/Olympus_Mons')"
    )


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[smtp\nport = \n")

    message = config_error(path)

    assert message.startswith(f"{path}: not valid TOML: ")
    assert "line 1" in message


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"

    assert config_error(path) == f"{path}: cannot read the config file (No such file or directory)"


@pytest.mark.parametrize(
    ("head", "line", "dotted", "variable"),
    [
        ('[smtp]\nhost = "mail.example.org"\npassword = "hunter2"\n', 3, "smtp.password",
         "NEWSLETTER_SMTP__PASSWORD"),
        ('secret_key = "abc"\n', 1, "secret_key", "NEWSLETTER_SECRET_KEY"),
    ],
)  # fmt: skip
def test_secret_in_the_file_is_refused_and_names_its_variable(
    tmp_path: Path, head: str, line: int, dotted: str, variable: str
) -> None:
    path = write_config(tmp_path, head)

    assert config_error(path) == (
        f"{path}:{line}: {dotted}: secrets are not read from the file; set {variable} instead"
    )


def test_every_problem_is_reported_one_line_each_without_traceback(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
        [smtp]
        port = "abc"
        prot = 25

        [schedule]
        timezone = "Nowhere/Special"
        """,
    )

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    lines = str(caught.value).split("\n")
    assert sorted(line.split(": ")[0:2] for line in lines) == [
        [f"{path}:2", "smtp.port"],
        [f"{path}:3", "smtp.prot"],
        [f"{path}:6", "schedule.timezone"],
    ]
    assert "Traceback" not in str(caught.value)
    # Raised `from None`: nothing chained that a handler might print along.
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_root_key_in_the_file_is_an_unknown_key(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('root = "/elsewhere"\n\n' + SENDER, encoding="utf-8")

    assert config_error(path).startswith(f"{path}:1: root: unknown key")


# --- the environment --------------------------------------------------------------------


def test_environment_overrides_the_file_and_keeps_the_rest_of_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, '[smtp]\nhost = "mail.example.org"\nport = 587\n')
    monkeypatch.setenv("NEWSLETTER_SMTP__PORT", "2525")

    settings = load_settings(path)

    assert settings.smtp.port == 2525
    assert settings.smtp.host == "mail.example.org"


def test_password_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, '[smtp]\nhost = "mail.example.org"\n')
    monkeypatch.setenv("NEWSLETTER_SMTP__PASSWORD", "hunter2")

    password = load_settings(path).smtp.password

    assert password is not None
    assert password.get_secret_value() == "hunter2"


def test_bad_environment_value_names_the_variable_not_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, "[smtp]\nport = 587\n")
    monkeypatch.setenv("NEWSLETTER_SMTP__PORT", "abc")

    message = config_error(path)

    assert message.startswith("environment variable NEWSLETTER_SMTP__PORT: smtp.port: ")
    assert message.endswith("(got 'abc')")
    assert str(path) not in message


def test_unknown_environment_variable_names_the_dotted_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, '[smtp]\nhost = ""\n')
    monkeypatch.setenv("NEWSLETTER_SMTP__PROT", "25")

    assert config_error(path) == (
        "environment variable NEWSLETTER_SMTP__PROT: smtp.prot: unknown key "
        "(expected one of: allow_http_links, host, password, port, tls, username)"
    )


def test_bad_lower_case_environment_value_is_not_blamed_on_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, "[smtp]\nport = 587\n")
    monkeypatch.setenv("newsletter_smtp__port", "abc")

    message = config_error(path)

    assert message.startswith("environment variable ")
    assert str(path) not in message


def test_newsletter_root_does_not_move_relative_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, "[paths]\nvar = 'var'\n")
    monkeypatch.setenv("NEWSLETTER_ROOT", str(tmp_path / "elsewhere"))

    assert load_settings(path).var_dir == tmp_path / "var"


# --- the secret key ---------------------------------------------------------------------


def settings_with_var(tmp_path: Path) -> Settings:
    return load_settings(write_config(tmp_path, '[paths]\nvar = "state"\n'))


def test_secret_key_is_generated_once_into_var_owner_only(tmp_path: Path) -> None:
    settings = settings_with_var(tmp_path)
    key_file = tmp_path / "state" / "secret_key"

    first = load_secret_key(settings)

    assert len(first) >= 40
    assert key_file.read_text(encoding="ascii") == first + "\n"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_secret_key(settings) == first
    assert load_secret_key(settings_with_var(tmp_path)) == first
    assert sorted(p.name for p in key_file.parent.iterdir()) == ["secret_key"]


def test_secret_key_from_the_environment_wins_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "from-the-environment")

    assert load_secret_key(settings_with_var(tmp_path)) == "from-the-environment"
    assert not (tmp_path / "state").exists()


def test_secret_key_in_the_environment_wins_over_the_generated_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generated = load_secret_key(settings_with_var(tmp_path))
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "from-the-environment")

    assert load_secret_key(settings_with_var(tmp_path)) == "from-the-environment"
    assert generated != "from-the-environment"


def test_empty_secret_key_in_the_environment_is_never_the_signing_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "")
    try:
        outcome = load_secret_key(settings_with_var(tmp_path))
    except ConfigError as exc:  # refusing the empty value is one right answer,
        outcome = str(exc)  # signing with the generated key instead is the other
    assert outcome != ""
    assert "NEWSLETTER_SECRET_KEY" in outcome or len(outcome) >= 40


def test_a_dkim_domain_needs_a_selector_and_a_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[dkim]\ndomain = "example.org"\n')

    assert "dkim: domain is set: selector and key_path are needed too" in config_error(path)


def test_the_dkim_key_path_is_taken_from_the_config_folder(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, '[dkim]\ndomain = "example.org"\nselector = "s1"\nkey_path = "keys/s1.pem"\n'
    )

    assert load_settings(path).dkim.key_path == tmp_path / "keys/s1.pem"


@pytest.mark.parametrize("sender_id", ["spin", "a-sender-id-too-long"])
def test_a_feedback_id_sender_id_has_5_to_15_characters(tmp_path: Path, sender_id: str) -> None:
    path = write_config(tmp_path, f'[dkim]\nfeedback_id = "{sender_id}"\n')

    assert "dkim.feedback_id: must be 5 to 15 characters long" in config_error(path)


def test_the_return_path_must_leave_room_for_verp(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[bounces]\nreturn_path = "bounces+x@example.org"\n')

    assert "bounces.return_path: must be an ASCII address without '+'" in config_error(path)
