"""etc/prefork.toml documents every setting with its real default."""

from pathlib import Path

from prefork import config, config_doc

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "prefork.toml"


def test_example_is_generated_from_the_config_fields():
    assert EXAMPLE.read_text() == config_doc.render(), \
        "regenerate: python -m prefork.config_doc > etc/prefork.toml"


def test_every_setting_is_documented():
    text = EXAMPLE.read_text()
    for name in config.FIELDS:
        assert f"{name} = " in text, f"etc/prefork.toml does not mention {name}"


def test_example_loads_to_the_defaults():
    values = config.read_toml(str(EXAMPLE))
    loaded = config.build(values, {"target": "m:x"}, str(EXAMPLE))
    assert loaded == config.Config(target="m:x")
