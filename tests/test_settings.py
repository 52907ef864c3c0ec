"""Settings: parsers, the environment, and options declared once (flag, variable, default, help)."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest

from bulklabel import settings
from bulklabel.cli import build_parser
from bulklabel.errors import ConfigError
from bulklabel.options import (
    EngineOptions,
    ModelOptions,
    Option,
    RuntimeOptions,
    TrainOptions,
    add_options,
    from_args,
    options_of,
)
from bulklabel.settings import env_default, env_name, positive_int

from conftest import ROOT


def test_env_name() -> None:
    assert env_name("--batch-size") == "BULKLABEL_BATCH_SIZE"
    assert env_name("--out") == "BULKLABEL_OUT"


def test_env_default_reads_environment(monkeypatch) -> None:
    monkeypatch.setenv("BULKLABEL_BATCH_SIZE", "64")
    assert env_default("--batch-size") == "64"
    assert env_default("--batch-size", 32) == "64"


def test_env_default_falls_back(monkeypatch) -> None:
    monkeypatch.delenv("BULKLABEL_BATCH_SIZE", raising=False)
    assert env_default("--batch-size") is None
    assert env_default("--batch-size", 32) == 32


@pytest.mark.parametrize(
    "text,shown", [("0", "=0"), ("-3", "=-3"), ("abc", "='abc'"), ("1.5", "='1.5'"), ("", "=''")]
)
def test_positive_int_rejects(text: str, shown: str) -> None:
    with pytest.raises(ConfigError) as exc:
        positive_int(text, "--batch-size")
    msg = str(exc.value)
    assert "--batch-size" in msg
    assert "Received:" in msg
    assert msg.endswith("--batch-size" + shown)


def test_positive_int_rejects_none() -> None:
    with pytest.raises(ConfigError, match="whole number"):
        positive_int(None, "--workers")  # type: ignore[arg-type]


@pytest.mark.parametrize("text,value", [("1", 1), ("64", 64), (" 8 ", 8), (3, 3)])
def test_positive_int_accepts(text, value: int) -> None:
    assert positive_int(text, "--batch-size") == value


@pytest.mark.parametrize("text", ["1", "true", "TRUE", "Yes", "on", " On "])
def test_boolean_true_words(text) -> None:
    assert settings.boolean(text, "X") is True


@pytest.mark.parametrize("text", ["0", "false", "False", "FALSE", "no", "off"])
def test_boolean_false_words(text) -> None:
    assert settings.boolean(text, "X") is False


@pytest.mark.parametrize("text", ["", "2", "y", "enabled", "nope"])
def test_boolean_refuses_anything_else(text) -> None:
    with pytest.raises(ConfigError, match="BULKLABEL_X takes 1/true/yes/on or 0/false/no/off"):
        settings.boolean(text, "BULKLABEL_X")


def test_parsers() -> None:
    assert settings.parse_image_size("224") == (224, 224)
    assert settings.parse_image_size("240x320") == (240, 320)
    assert settings.parse_image_size(None) is None
    for bad in ("abc", "4", "1x2x3", "0x224"):
        with pytest.raises(ConfigError, match="--image-size takes N or HxW"):
            settings.parse_image_size(bad)
    assert settings.size_list("150,299", "--sizes") == [150, 299]
    assert settings.size_list(None, "--sizes") == []
    with pytest.raises(ConfigError, match="sizes like 150,299"):
        settings.size_list("150,big", "--sizes")
    assert settings.auto_or_positive("auto", "--batch-size") == 0
    assert settings.auto_or_positive("64", "--batch-size") == 64
    with pytest.raises(ConfigError, match="at least 1"):
        settings.auto_or_positive("0", "--batch-size")
    assert settings.non_negative_int("0", "--decode-threads") == 0
    with pytest.raises(ConfigError, match="at least 0"):
        settings.non_negative_int("-1", "--decode-threads")
    assert [settings.weights(w) for w in (None, "", "ImageNet", "NONE", "w.h5")] == [
        None, None, "imagenet", "none", "w.h5"]
    pick = settings.choice(("a", "b"))
    assert pick("a", "--x") == "a" and pick(None, "--x") is None
    with pytest.raises(ConfigError, match="--x takes one of a, b"):
        pick("c", "--x")


def test_byte_sizes() -> None:
    assert settings.byte_size("268435456", "--max-bytes") == 256 * 1024**2
    assert settings.byte_size("256M", "--max-bytes") == 256 * 1024**2
    assert settings.byte_size("1GiB", "--max-bytes") == 1024**3
    assert settings.byte_size(" 512 kb ", "--max-bytes") == 512 * 1024
    for bad in ("", "0", "-1", "1.5G", "12 parsecs", "M"):
        with pytest.raises(ConfigError, match="--max-bytes takes a size in bytes"):
            settings.byte_size(bad, "--max-bytes")
    assert EngineOptions().max_bytes == settings.DEFAULT_MAX_BYTES == 256 * 1024**2


def test_redis_url_and_redaction(monkeypatch) -> None:
    monkeypatch.delenv("BULKLABEL_REDIS_URL", raising=False)
    assert settings.redis_url() == settings.DEFAULT_REDIS_URL
    with pytest.raises(ConfigError) as exc:
        settings.redis_url("http://:hunter2@host:6379")
    assert "hunter2" not in str(exc.value) and "***" in str(exc.value)
    assert settings.redact_url("redis://:pw@[::1]:6379/0") == "redis://:***@[::1]:6379/0"
    assert settings.redact_url("redis://u:pw@h/1") == "redis://u:***@h/1"
    assert settings.redact_url("redis://h:6379/0") == "redis://h:6379/0"
    assert settings.redact_url("unix:///run/redis.sock?db=0&password=s3cr3t") == \
        "unix:///run/redis.sock?db=0&password=***"
    assert settings.redact_url("redis://h/0?Password=a&x=1") == "redis://h/0?Password=***&x=1"
    assert settings.redact_url("rediss://u:p@h:6380/0?password=q") == "rediss://u:***@h:6380/0?password=***"


# --- options declared once ----------------------------------------------------------------


def _parse(argv: list[str], *sources) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_options(parser, *sources)
    return parser.parse_args(argv)


def test_defaults_match_without_a_command_line(monkeypatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("BULKLABEL_"):
            monkeypatch.delenv(key)
    for cls in (ModelOptions, EngineOptions, RuntimeOptions, TrainOptions):
        assert from_args(cls, _parse([], cls)) == cls(), cls.__name__
    assert EngineOptions() == EngineOptions(batch_size=0, top_k=5, decode_threads=0, io_threads=0,
                                            max_pixels=90_000_000)


def test_flag_wins_over_environment_over_default(monkeypatch) -> None:
    monkeypatch.setenv("BULKLABEL_TOP_K", "3")
    assert from_args(EngineOptions, _parse([], EngineOptions)).top_k == 3
    assert from_args(EngineOptions, _parse(["--top-k", "7"], EngineOptions)).top_k == 7
    monkeypatch.delenv("BULKLABEL_TOP_K")
    assert from_args(EngineOptions, _parse([], EngineOptions)).top_k == 5


def test_errors_name_where_the_value_came_from(monkeypatch) -> None:
    monkeypatch.setenv("BULKLABEL_BATCH_SIZE", "lots")
    with pytest.raises(ConfigError, match=r"BULKLABEL_BATCH_SIZE must be a whole number"):
        from_args(EngineOptions, _parse([], EngineOptions))
    with pytest.raises(ConfigError, match=r"--batch-size must be at least 1\. Received: --batch-size=0"):
        from_args(EngineOptions, _parse(["--batch-size", "0"], EngineOptions))


@pytest.mark.parametrize("value,expected", [("False", False), ("no", False), ("off", False),
                                            ("0", False), ("TRUE", True), ("on", True)])
def test_boolean_environment_is_strict(monkeypatch, value, expected) -> None:
    monkeypatch.setenv("BULKLABEL_UNSAFE_MODEL", value)
    assert from_args(ModelOptions, _parse([], ModelOptions)).unsafe is expected


def test_boolean_environment_refuses_junk(monkeypatch) -> None:
    monkeypatch.setenv("BULKLABEL_MIXED_PRECISION", "maybe")
    with pytest.raises(ConfigError, match="BULKLABEL_MIXED_PRECISION takes"):
        from_args(RuntimeOptions, _parse([], RuntimeOptions))


def test_no_form_wins_over_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("BULKLABEL_UNSAFE_MODEL", "1")
    assert from_args(ModelOptions, _parse(["--no-unsafe-model"], ModelOptions)).unsafe is False
    monkeypatch.setenv("BULKLABEL_UNSAFE_MODEL", "0")
    assert from_args(ModelOptions, _parse(["--unsafe-model"], ModelOptions)).unsafe is True


def test_tensorflow_threads_have_their_own_name(monkeypatch) -> None:
    for argv in (["--tf-threads", "2"], ["--threads", "2"]):
        assert from_args(RuntimeOptions, _parse(argv, RuntimeOptions)).tf_threads == 2
    monkeypatch.setenv("BULKLABEL_THREADS", "3")  # the old name's variable still works
    assert from_args(RuntimeOptions, _parse([], RuntimeOptions)).tf_threads == 3
    monkeypatch.setenv("BULKLABEL_TF_THREADS", "4")  # the clear name's variable wins
    assert from_args(RuntimeOptions, _parse([], RuntimeOptions)).tf_threads == 4
    assert "decode_threads" not in {f.name for f in dataclasses.fields(RuntimeOptions)}


def test_required_option_can_come_from_the_environment(monkeypatch) -> None:
    required = Option(("--model",), help="m", required=True)
    monkeypatch.delenv("BULKLABEL_MODEL", raising=False)
    with pytest.raises(SystemExit):
        _parse([], required)
    monkeypatch.setenv("BULKLABEL_MODEL", "m.keras")
    assert required.value(_parse([], required)) == "m.keras"


def test_environment_values_are_plain_strings(monkeypatch) -> None:
    monkeypatch.setenv("BULKLABEL_LABELS", "classes.txt")
    options = from_args(ModelOptions, _parse([], ModelOptions))
    assert type(options.labels) is str and dataclasses.asdict(options)["labels"] == "classes.txt"


def _all_actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((name, a) for a in sub._actions)


def test_every_command_builds_and_shows_its_variables() -> None:
    seen = 0
    for command, action in _all_actions(build_parser()):
        if not action.option_strings or action.help is None or action.option_strings[0].startswith("--no-"):
            continue
        options = [o for cls in (ModelOptions, EngineOptions, RuntimeOptions) for o in options_of(cls)
                   if o.dest == action.dest and action.help.startswith(o.help) and o.variables()]
        for option in options:
            assert f"[${option.variables()[0]}]" in action.help, (command, action.dest)
            seen += 1
    assert seen >= 3 * 12  # classify, evaluate and worker each show the inference options


def test_the_light_side_never_imports_worker_or_tensorflow() -> None:
    probe = ("import sys, bulklabel.cli as c, producer.submit, producer.status, producer.results, "
             "producer.snapshot, bulklabel.chunks, bulklabel.jobs, bulklabel.review.source, bulklabel.review.export, "
             "bulklabel.review.import_reviews, bulklabel.review.report; c.build_parser(); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('worker', 'tensorflow', 'keras')))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
