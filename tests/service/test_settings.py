"""Settings: defaults that run on a laptop, TOML + flags, unknown keys named."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from server.settings import Settings, SettingsError, load_settings, settings_from_mapping


def test_defaults_run_on_a_laptop() -> None:
    settings = load_settings()
    assert settings.listen == "127.0.0.1:50051"
    assert settings.video_root == Path("var/videos")
    assert settings.engine.runtime == "onnxruntime"
    assert settings.security.allow_file_sources is False


def test_toml_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "fitscore.toml"
    config.write_text(
        'listen = "0.0.0.0:6000"\n'
        "[engine]\nmax_batch = 4\nmax_wait_ms = 5\n"
        '[cameras]\nlane1 = "rtsp://10.0.0.5/stream1"\n',
        encoding="utf-8",
    )
    settings = load_settings(config, listen="127.0.0.1:7000", video_root=str(tmp_path))
    assert settings.listen == "127.0.0.1:7000"
    assert settings.video_root == tmp_path
    assert settings.engine.max_batch == 4
    assert settings.engine.max_wait_ms == 5.0
    assert settings.cameras == {"lane1": "rtsp://10.0.0.5/stream1"}


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ({"listn": "x"}, "'listn'"),
        ({"engine": {"max_batchsize": 3}}, "'engine.max_batchsize'"),
        ({"engine": {"runtime": "tflite"}}, "engine.runtime"),
        ({"engine": {"max_batch": "8"}}, "engine.max_batch"),
        ({"engine": {"max_batch": 0}}, "engine.max_batch"),
        ({"camera": {"stall_timeout_s": True}}, "camera.stall_timeout_s"),
        ({"listen": "localhost"}, "listen"),
        ({"cameras": {"bad id!": "rtsp://x/y"}}, "cameras.bad id!"),
        ({"security": {"tls_cert_file": "c.pem"}}, "tls_key_file"),
    ],
)
def test_bad_settings_name_the_key(document: dict[str, object], named: str) -> None:
    with pytest.raises(SettingsError, match=named.replace(".", r"\.").replace("!", "!")):
        settings_from_mapping(document)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "absent.toml")


def test_broken_toml_is_named(tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text("listen = \n", encoding="utf-8")
    with pytest.raises(SettingsError, match=r"broken\.toml"):
        load_settings(config)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.listen = "x:1"  # type: ignore[misc]


def test_the_readme_example_is_valid(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "fitscore.toml"
    config.write_text(example, encoding="utf-8")
    settings = load_settings(config)
    assert settings.rules_file is None
    assert settings.security.token_file is None
    assert settings.cameras == {"lane1": "rtsp://192.0.2.10:554/stream1"}
    assert settings == replace(Settings(), cameras=settings.cameras)
