"""`BlobSettings` from the environment: the embedded default needs nothing, S3 needs a bucket,
and a value that cannot work is refused at start naming its variable (`SettingError`, code
``invalid_setting``), without echoing a credential."""

from __future__ import annotations

from pathlib import Path

import pytest

from functions.settings import BlobSettings, ControlPlaneSettings, SettingError

S3 = {"VWM_BLOB_STORE": "s3", "VWM_S3_BUCKET": "acme-vwm-skills"}


def blobs(env: dict[str, str], tmp_path: Path) -> BlobSettings:
    return ControlPlaneSettings.from_env({"VWM_DATA_DIR": str(tmp_path / "data"), **env}).blobs


def test_the_default_is_a_folder_in_the_data_folder(tmp_path: Path) -> None:
    settings = blobs({}, tmp_path)
    assert settings.store == "local"
    assert settings.local_dir == tmp_path / "data" / "blobs"
    assert settings.bucket == ""
    assert settings.endpoint_url is None
    assert settings.region == "us-east-1"
    assert settings.prefix == ""
    assert settings.addressing_style == "auto"
    assert settings.access_key_id is None and settings.secret_access_key is None


def test_the_folder_may_be_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert blobs({"VWM_BLOB_DIR": "packages"}, tmp_path).local_dir == tmp_path / "packages"


def test_s3_settings_are_read(tmp_path: Path) -> None:
    settings = blobs(
        {
            **S3,
            "VWM_S3_ENDPOINT_URL": "http://minio:9000/",
            "VWM_S3_REGION": "eu-central-1",
            "VWM_S3_PREFIX": "/vwm/skills/",
            "VWM_S3_ADDRESSING_STYLE": "Path",
            "VWM_S3_ACCESS_KEY_ID": "minio",
            "VWM_S3_SECRET_ACCESS_KEY": "minio-secret",
        },
        tmp_path,
    )
    assert settings.store == "s3"
    assert settings.bucket == "acme-vwm-skills"
    assert settings.endpoint_url == "http://minio:9000"
    assert settings.region == "eu-central-1"
    assert settings.prefix == "vwm/skills"
    assert settings.addressing_style == "path"
    assert (settings.access_key_id, settings.secret_access_key) == ("minio", "minio-secret")


def test_s3_without_a_bucket_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingError, match="VWM_S3_BUCKET is required") as refused:
        blobs({"VWM_BLOB_STORE": "s3"}, tmp_path)
    assert refused.value.code == "invalid_setting"


@pytest.mark.parametrize(
    "given",
    [
        {"VWM_S3_ACCESS_KEY_ID": "AKIAHALF"},
        {"VWM_S3_SECRET_ACCESS_KEY": "half-a-secret"},
    ],
    ids=["only-the-key-id", "only-the-secret"],
)
def test_half_the_credentials_are_refused_without_echoing_them(
    tmp_path: Path, given: dict[str, str]
) -> None:
    with pytest.raises(SettingError, match="set both, or neither") as refused:
        blobs({**S3, **given}, tmp_path)
    assert "VWM_S3_ACCESS_KEY_ID" in refused.value.message
    assert "VWM_S3_SECRET_ACCESS_KEY" in refused.value.message
    for value in given.values():
        assert value not in str(refused.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VWM_BLOB_STORE", "gcs"),
        ("VWM_S3_ADDRESSING_STYLE", "dns"),
        ("VWM_S3_BUCKET", "s3://acme-vwm-skills"),
        ("VWM_S3_BUCKET", "arn:aws:s3:::acme"),
        ("VWM_S3_BUCKET", "ab"),
        ("VWM_S3_ENDPOINT_URL", "minio:9000"),
        ("VWM_S3_ENDPOINT_URL", "ftp://minio:9000"),
        ("VWM_S3_ENDPOINT_URL", "https://"),
        ("VWM_S3_ENDPOINT_URL", "https://s3.example.com/?x=1"),
        ("VWM_S3_REGION", "EU Central"),
        ("VWM_S3_PREFIX", "vwm/../other"),
        ("VWM_S3_PREFIX", "vwm//skills"),
        ("VWM_S3_PREFIX", "vwm\\skills"),
        ("VWM_S3_PREFIX", "vwm/\x01"),
    ],
)
def test_a_value_that_cannot_work_is_refused_naming_it(
    tmp_path: Path, name: str, value: str
) -> None:
    # Checked whichever the store: a bad value fails at start, not when S3 is turned on.
    with pytest.raises(SettingError, match=name) as refused:
        blobs({name: value}, tmp_path)
    assert refused.value.code == "invalid_setting"


def test_credentials_in_the_endpoint_url_are_refused_without_echoing_them(
    tmp_path: Path,
) -> None:
    with pytest.raises(SettingError, match="VWM_S3_ENDPOINT_URL") as refused:
        blobs({**S3, "VWM_S3_ENDPOINT_URL": "https://user:hunter2@s3.example.com"}, tmp_path)
    assert "hunter2" not in str(refused.value)
