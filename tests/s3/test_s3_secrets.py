"""Credentials never show: not in a repr, an error message, a traceback, a log line or printed registry options."""

from __future__ import annotations

import logging
import pickle
import traceback
from typing import Any

import numpy as np
import pytest

from polystore import BackendRegistry, S3Backend, ZarrBackend
from tests._seaweed import SeaweedServer


def assert_no_credentials(text: str, seaweed: SeaweedServer) -> None:
    assert seaweed.access_key_id not in text
    assert seaweed.secret_access_key not in text


def test_repr_and_str_show_no_credentials(s3: S3Backend, seaweed: SeaweedServer) -> None:
    for text in (repr(s3), str(s3), repr(vars(s3)), repr(pickle.loads(pickle.dumps(s3)))):
        assert_no_credentials(text, seaweed)
    assert "credentials='given'" in repr(s3)


def test_an_endpoint_with_user_info_is_shown_without_it() -> None:
    backend = S3Backend("bucket", endpoint="https://user:hunter2-password@s3.example.org")
    assert "hunter2-password" not in repr(backend) and "***@s3.example.org" in repr(backend)


def test_printed_registry_options_hide_the_credentials(s3_options: dict[str, Any], seaweed: SeaweedServer) -> None:
    registry = BackendRegistry({"s3": s3_options})
    for text in (repr(registry.options), str(registry.options), str(registry.options["s3"]), repr(registry["s3"])):
        assert_no_credentials(text, seaweed)
    assert registry.options["s3"]["secret_access_key"] == seaweed.secret_access_key  # still usable


def test_a_bad_option_error_hides_the_credentials(s3_options: dict[str, Any], seaweed: SeaweedServer) -> None:
    with pytest.raises(TypeError, match="colour") as raised:
        BackendRegistry({"s3": {**s3_options, "colour": "blue"}})["s3"]
    assert_no_credentials("".join(traceback.format_exception(raised.value)), seaweed)


@pytest.mark.parametrize("wrong", ["secret", "key_id"])
def test_refused_credentials_raise_permission_error_naming_neither(
    s3_options: dict[str, Any], seaweed: SeaweedServer, wrong: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A wrong secret with a known key id: S3 servers may echo the key id in their error body.
    if wrong == "secret":
        s3_options["secret_access_key"] = "ps-wrong-secret-" + seaweed.secret_access_key[::-1]
    else:
        s3_options["access_key_id"] = "PSWRONGKEY" + seaweed.access_key_id[::-1]
    backend = S3Backend(**s3_options)
    caplog.set_level(logging.DEBUG, logger="polystore")
    operations = (lambda: backend.save(b"x", "a.bin"), lambda: backend.load("a.bin"), lambda: backend.list_dir("/"))
    for operation in operations:
        with pytest.raises(PermissionError, match="s3 backend: the server refused") as raised:
            operation()
        text = "".join(traceback.format_exception(raised.value))
        for secret in (s3_options["access_key_id"], s3_options["secret_access_key"]):
            assert secret not in text
    assert caplog.records, "the failures are logged at debug level"
    for record in caplog.records:
        for secret in (s3_options["access_key_id"], s3_options["secret_access_key"]):
            assert secret not in record.getMessage()


def test_credentials_from_the_environment_are_scrubbed_too(
    s3_options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "PSENVKEYNOTKNOWN0001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "ps-env-secret-not-known-0001")
    del s3_options["access_key_id"], s3_options["secret_access_key"]
    backend = S3Backend(**s3_options)
    with pytest.raises(PermissionError) as raised:
        backend.save(b"x", "a.bin")
    text = "".join(traceback.format_exception(raised.value))
    assert "PSENVKEYNOTKNOWN0001" not in text and "ps-env-secret-not-known-0001" not in text


def test_a_key_id_echoed_by_the_server_is_scrubbed_from_the_error(s3: S3Backend, seaweed: SeaweedServer) -> None:
    # AWS echoes the key id in a SignatureDoesNotMatch body; SeaweedFS does not, so the body is made here.
    import obstore.exceptions

    body = f"<Error><Code>SignatureDoesNotMatch</Code><AWSAccessKeyId>{seaweed.access_key_id}</AWSAccessKeyId></Error>"
    echoed = obstore.exceptions.GenericError(f"Server returned non-2xx status code: 403 Forbidden: {body}")
    error = s3._client.failure(echoed, "write", "a.bin")
    assert isinstance(error, PermissionError) and "SignatureDoesNotMatch" in str(error)
    assert_no_credentials(str(error), seaweed)


# -- zarr arrays in a bucket: the same rules ---------------------------------------------
def bucket_zarr_options(s3_options: dict[str, Any]) -> dict[str, Any]:
    options = dict(s3_options)
    return {"root": f"s3://{options.pop('bucket')}/{options.pop('prefix')}", "store_options": options}


def test_zarr_in_a_bucket_repr_pickle_and_registry_options_show_no_credentials(
    s3_options: dict[str, Any], seaweed: SeaweedServer
) -> None:
    registry = BackendRegistry({"zarr": bucket_zarr_options(s3_options)})
    backend = registry["zarr"]
    backend.save(np.arange(4), "a.zarr")
    copy = pickle.loads(pickle.dumps(backend))
    assert (copy.load("a.zarr") == np.arange(4)).all()  # allow_http survives the pickle (client_options)
    texts = (repr(backend), str(backend), repr(copy), repr(registry.options), str(registry.options["zarr"]))
    for text in texts:
        assert_no_credentials(text, seaweed)
    assert "credentials='given'" in repr(backend) and "s3://" in repr(backend)


def test_an_array_zarr_in_a_bucket_hands_out_pickles_and_works_elsewhere(s3_options: dict[str, Any]) -> None:
    backend = ZarrBackend(**bucket_zarr_options(s3_options))
    array = backend.create_array("p.zarr", (4,), "int32", (2,))
    unpickled = pickle.loads(pickle.dumps(array))
    unpickled[:] = np.arange(4)
    assert (backend.load("p.zarr") == np.arange(4)).all()


def test_a_bad_store_option_error_hides_the_credentials(s3_options: dict[str, Any], seaweed: SeaweedServer) -> None:
    options = bucket_zarr_options(s3_options)
    options["store_options"]["colour"] = "blue"
    with pytest.raises(TypeError, match="colour") as raised:
        BackendRegistry({"zarr": options})["zarr"]
    assert_no_credentials("".join(traceback.format_exception(raised.value)), seaweed)


def test_zarr_in_a_bucket_with_refused_credentials_raises_permission_error_naming_neither(
    s3_options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    s3_options["secret_access_key"] = "ps-wrong-secret-for-zarr-" + s3_options["secret_access_key"][::-1]
    backend = ZarrBackend(**bucket_zarr_options(s3_options))
    caplog.set_level(logging.DEBUG, logger="polystore")
    operations = (
        lambda: backend.save(np.arange(3), "a.zarr"),
        lambda: backend.load("a.zarr"),
        lambda: backend.list_dir("."),
    )
    for operation in operations:
        with pytest.raises(PermissionError, match="zarr backend: the server refused") as raised:
            operation()
        text = "".join(traceback.format_exception(raised.value))
        for secret in (s3_options["access_key_id"], s3_options["secret_access_key"]):
            assert secret not in text
    assert caplog.records
    for record in caplog.records:
        for secret in (s3_options["access_key_id"], s3_options["secret_access_key"]):
            assert secret not in record.getMessage()
