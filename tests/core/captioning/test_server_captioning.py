"""The model-server backend against a real HTTP server process on 127.0.0.1
(tests/support/fake_openai_server.py speaks the OpenAI chat-completions shape)."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from core.captioning.engine import run_caption_job
from core.captioning.errors import ModelLoadError
from core.captioning.job_spec import CaptionJobSpec, GenerationSettings
from core.captioning.server import (
    ServerCaptioner,
    endpoint_host,
    list_server_models,
    normalize_endpoint,
)
from core.datasets.export_job import export_dataset
from core.library import Library
from core.models import Caption, Image, ImageState
from tests.support.imagegen import write_jpeg
from tests.support.paths import REPO_ROOT
from tests.support.server_fixtures import FakeServer

SECRET = "sk-test-7f3a9c1e55d2b8406e9a"


def _photos(library: Library, folder: Path, colors: list[tuple[int, int, int]], size=(1600, 1200)) -> list[int]:
    for i, color in enumerate(colors):
        write_jpeg(folder / f"{i:02}.jpg", color=color, size=size, seed=i)
    library.scan([library.add_root(folder).id])
    with library.db.read() as session:
        return list(session.scalars(select(Image.id).order_by(Image.rel_path)))


def _current(library: Library) -> dict[int, Caption]:
    with library.db.read() as session:
        return {c.image_id: c for c in session.scalars(select(Caption).where(Caption.is_current.is_(True)))}


def _spec(server: FakeServer, **changes: object) -> CaptionJobSpec:
    values: dict = {"backend": "openai", "endpoint": server.endpoint, "model": "llava:latest", "batch_size": 4}
    values.update(changes)
    return CaptionJobSpec(**values)


GREEN, RED = (20, 200, 20), (200, 40, 40)


def test_captions_land_with_provenance_and_images_are_shrunk_jpegs(
    library: Library, photo_dir: Path, server: FakeServer
) -> None:
    ids = _photos(library, photo_dir, [GREEN] * 5)
    spec = _spec(server, generation=GenerationSettings(prompt="Describe the photo in one line.", max_new_tokens=40))
    stats = run_caption_job(library, spec)

    assert (stats.captioned, stats.errors) == (5, 0)
    current = _current(library)
    assert sorted(current) == sorted(ids)
    counters = server.counters()
    # 1600x1200 photos are uploaded as JPEGs of at most 1024 px.
    assert counters["uploaded_sizes"] == [[1024, 768]] * 5
    assert set(counters["formats"]) == {"JPEG"}
    assert counters["prompts"] == ["Describe the photo in one line."] * 5
    assert counters["logprobs_asked"] == [True] * 5
    for caption in current.values():
        assert caption.text == "a 1024x768 green photo"  # whitespace stripped
        assert caption.model_name == "llava:latest"
        # The server's token log-probabilities (fake server: -0.2 per token, the colour
        # word -0.3) give the same stored score kind as a local model: their mean.
        assert caption.score == pytest.approx(-0.225)
        assert caption.provenance.score_kind == "mean_logprob"
        assert caption.provenance.scores == {"mean_logprob": -0.225, "min_token_logprob": -0.3}
        identity = caption.provenance.identity
        assert identity["backend"] == "openai"
        assert identity["endpoint"] == f"127.0.0.1:{server.port}"
        assert identity["model"] == "llava:latest"
        assert caption.provenance.generation["prompt"] == "Describe the photo in one line."
    job = library.jobs("caption")[-1]
    assert job.params["endpoint"] == server.endpoint and job.params["backend"] == "openai"

    # Resuming: nothing left to do, no request sent.
    again = run_caption_job(library, spec)
    assert (again.captioned, again.skipped) == (0, 5)
    assert server.counters()["chat_requests"] == 5


def test_a_server_that_refuses_logprobs_is_asked_once_and_captions_have_no_score(
    library: Library, photo_dir: Path, server: FakeServer
) -> None:
    server.script(logprobs="reject")
    ids = _photos(library, photo_dir, [GREEN, RED, GREEN], size=(64, 48))
    stats = run_caption_job(library, _spec(server, max_concurrency=1))

    assert (stats.captioned, stats.errors) == (3, 0)  # no error for the user
    counters = server.counters()
    # The first request asked and got 400; it was sent again without, and so was every later one.
    assert counters["logprobs_asked"] == [True, False, False, False]
    current = _current(library)
    assert sorted(current) == sorted(ids)
    for caption in current.values():
        assert caption.score is None and caption.provenance.score_kind is None
    assert {c.text for c in current.values()} == {"a 64x48 green photo", "a 64x48 red photo"}


def test_a_server_that_ignores_logprobs_gives_captions_without_a_score(
    library: Library, photo_dir: Path, server: FakeServer
) -> None:
    server.script(logprobs="ignore")
    _photos(library, photo_dir, [RED, GREEN], size=(64, 48))
    stats = run_caption_job(library, _spec(server))
    assert (stats.captioned, stats.errors) == (2, 0)
    assert all(c.score is None for c in _current(library).values())
    assert server.counters()["logprobs_asked"] == [True, True]  # nothing refused: it keeps asking


@pytest.mark.slow
def test_429_5xx_and_timeouts_are_retried(library: Library, photo_dir: Path, server: FakeServer) -> None:
    _photos(library, photo_dir, [GREEN] * 4, size=(64, 48))
    server.script(queue=["429", "500", "503", "slow", "429-noheader"])
    captioner = ServerCaptioner(server.endpoint, "llava:latest", max_concurrency=2, timeout=1.0, backoff=0.05)
    started = time.monotonic()
    stats = run_caption_job(library, _spec(server), captioner=captioner)
    captioner.close()

    assert (stats.captioned, stats.errors) == (4, 0), stats.problems
    assert {c.text for c in _current(library).values()} == {"a 64x48 green photo"}
    counters = server.counters()
    assert counters["chat_requests"] == 4 + 5  # each failure retried once, then answered
    assert counters["behaviours"][:5] == ["429", "500", "503", "slow", "429-noheader"]
    # Retry-After: 1 was honoured (back-off alone is 0.05-0.1 s here).
    assert time.monotonic() - started >= 1.0


def test_an_image_whose_requests_keep_failing_is_that_images_error(
    library: Library, photo_dir: Path, server: FakeServer
) -> None:
    ids = _photos(library, photo_dir, [GREEN, RED, GREEN], size=(64, 48))
    server.script(fail_colors=["red"])  # malformed JSON for the red photo, every time
    captioner = ServerCaptioner(server.endpoint, "llava:latest", max_retries=1, backoff=0.01)
    stats = run_caption_job(library, _spec(server), captioner=captioner)
    captioner.close()

    assert (stats.captioned, stats.errors) == (2, 1)
    assert "not valid JSON" in stats.problems[0] and "01.jpg" in stats.problems[0]
    assert sorted(_current(library)) == sorted([ids[0], ids[2]])
    with library.db.read() as session:  # the file is fine: it stays OK, to retry later
        assert session.get(Image, ids[1]).state == ImageState.OK.value


def test_a_dead_server_gives_one_clear_error_and_nothing_is_lost(
    library: Library, photo_dir: Path, server: FakeServer
) -> None:
    ids = _photos(library, photo_dir, [GREEN] * 3, size=(64, 48))
    spec = _spec(server)
    run_caption_job(library, spec.with_(scope=(ids[0],)))
    before = {i: c.text for i, c in _current(library).items()}
    server.stop()

    with pytest.raises(ModelLoadError) as raised:
        run_caption_job(library, spec)
    message = str(raised.value)
    assert raised.value.kind == "server"
    assert f"127.0.0.1:{server.port}" in message and "cannot be reached" in message and "Is it running?" in message
    assert {i: c.text for i, c in _current(library).items()} == before
    with library.db.read() as session:
        assert {im.state for im in session.scalars(select(Image))} == {ImageState.OK.value}
    assert library.jobs("caption")[-1].state == "failed"


def test_a_server_that_dies_mid_job_stops_it_keeping_the_committed_batches(
    library: Library, photo_dir: Path, server: FakeServer
) -> None:
    _photos(library, photo_dir, [GREEN] * 4, size=(64, 48))
    captioner = ServerCaptioner(server.endpoint, "llava:latest", max_retries=1, backoff=0.01)
    done: list[list[int]] = []

    def after_batch(changed: list[int]) -> None:
        done.append(changed)
        server.stop()  # after the first batch of two

    with pytest.raises(ModelLoadError, match="cannot be reached"):
        run_caption_job(library, _spec(server, batch_size=2), captioner=captioner, on_batch=after_batch)
    captioner.close()
    assert sorted(_current(library)) == sorted(done[0])  # the first batch is kept, no error marks
    with library.db.read() as session:
        assert {im.state for im in session.scalars(select(Image))} == {ImageState.OK.value}


@pytest.mark.slow
def test_concurrency_bound_is_respected(library: Library, photo_dir: Path, server: FakeServer) -> None:
    _photos(library, photo_dir, [GREEN] * 8, size=(64, 48))
    server.script(delay=0.3)
    stats = run_caption_job(library, _spec(server, batch_size=8, max_concurrency=3))
    assert stats.captioned == 8
    # 8 requests of 0.3 s each: three at a time, never more.
    assert server.counters()["max_in_flight"] == 3


@pytest.mark.slow
def test_the_api_key_is_sent_but_never_stored_logged_or_exported(
    library: Library, photo_dir: Path, server: FakeServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    _photos(library, photo_dir, [GREEN] * 3, size=(64, 48))
    monkeypatch.setenv("CAPTIONDESK_API_KEY", SECRET)
    server.script(api_key=SECRET, queue=["429"])
    caplog.set_level(logging.DEBUG)  # httpx2/httpcore debug logging included
    stats = run_caption_job(library, _spec(server))
    assert stats.captioned == 3
    assert server.counters()["authorized"] == 4  # every request carried the key

    for fmt in ("imagefolder", "csv", "coco", "parquet"):
        export_dataset(library, fmt, tmp_path / "export" / fmt, val_ratio=0)
    library.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("library.db*"))
    exported = b"".join(p.read_bytes() for p in (tmp_path / "export").rglob("*") if p.is_file())
    assert b"llava:latest" in stored and b"llava:latest" in exported  # the provenance is there...
    assert SECRET.encode() not in stored  # ...the key is not
    assert SECRET.encode() not in exported
    assert caplog.records and SECRET not in caplog.text


@pytest.mark.slow
def test_a_wrong_key_stops_the_job_with_one_error_that_does_not_show_it(
    library: Library, photo_dir: Path, server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _photos(library, photo_dir, [GREEN] * 2, size=(64, 48))
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    server.script(api_key="sk-another-key")
    with pytest.raises(ModelLoadError, match="refused the request .HTTP 401: Incorrect API key") as raised:
        run_caption_job(library, _spec(server))
    assert SECRET not in str(raised.value)
    assert _current(library) == {}


@pytest.mark.slow
def test_the_cli_captions_with_a_server_and_reports_a_dead_one_in_one_line(
    library: Library, photo_dir: Path, server: FakeServer, tmp_path: Path
) -> None:
    _photos(library, photo_dir, [GREEN] * 2, size=(64, 48))
    db = str(tmp_path / "library.db")
    library.close()
    command = [sys.executable, "-m", "captiondesk", "--library", db, "caption", "--all",
               "--backend", "openai", "--endpoint", server.endpoint, "--model", "llava:latest"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "CAPTIONDESK_API_KEY": SECRET}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "2 captioned" in done.stdout
    assert SECRET not in done.stdout + done.stderr

    server.stop()
    failed = subprocess.run([*command, "--overwrite-model-captions"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert failed.returncode == 2
    errors = [line for line in failed.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "cannot be reached" in errors[0], failed.stderr
    assert "Traceback" not in failed.stderr


def test_model_discovery_openai_and_ollama(server: FakeServer) -> None:
    assert list_server_models(server.endpoint) == ["llava:latest", "qwen2.5vl:7b"]
    # Ollama without the OpenAI /v1/models route: its own /api/tags.
    server.script(openai_models=False, models=["moondream:latest", "llava:13b"])
    assert list_server_models(f"http://127.0.0.1:{server.port}") == ["llava:13b", "moondream:latest"]
    server.stop()
    with pytest.raises(ModelLoadError, match="cannot be reached"):
        list_server_models(server.endpoint)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"backend": "grpc"}, "backend must be one of local, openai, got 'grpc'"),
        ({"backend": "openai", "endpoint": None}, "endpoint must be the server's URL"),
        ({"backend": "openai", "endpoint": "ftp://host/v1"}, "got 'ftp://host/v1'"),
        ({"backend": "openai", "endpoint": "http://bob:hunter2@host/v1"}, r"got 'http://\*\*\*@host/v1'"),
        ({"backend": "openai", "endpoint": "http://host/v1?key=abc"}, "query string"),
        ({"backend": "openai", "endpoint": "http://h/v1", "max_concurrency": 0}, "max_concurrency .* got 0"),
        ({"server_timeout": 0}, "above 0, at most 3600, got 0"),  # the message must not offer 0
        ({"endpoint": "http://h/v1"}, "only used with backend 'openai'"),
    ],
)
def test_spec_validation_names_the_bad_value(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        CaptionJobSpec(**changes)
    assert "hunter2" not in str(raised.value)


def test_endpoint_normalisation_and_round_trip() -> None:
    assert normalize_endpoint("http://localhost:11434") == "http://localhost:11434/v1"
    assert normalize_endpoint(" http://localhost:1234/v1/ ") == "http://localhost:1234/v1"
    assert endpoint_host("http://localhost:11434/v1") == "localhost:11434"
    spec = CaptionJobSpec(backend="openai", endpoint="http://127.0.0.1:8080", model="m", max_concurrency=2)
    data = json.loads(json.dumps(spec.to_dict()))
    assert CaptionJobSpec.from_dict(data) == spec
    assert spec.label() == "m @ 127.0.0.1:8080"


def test_caption_dialog_picks_a_server_model(qtbot, server: FakeServer) -> None:
    from desktop_app.caption_dialog import CaptionDialog

    dialog = CaptionDialog(defaults=CaptionJobSpec(adapter="/adapters/mine"), known_models=[], selection_count=0,
                           filter_count=0, uncaptioned_count=3)
    qtbot.addWidget(dialog)
    assert not dialog.endpoint.isEnabled() and dialog.adapter.isEnabled()
    dialog.backend.setCurrentIndex(dialog.backend.findData("openai"))
    assert dialog.endpoint.isEnabled() and not dialog.adapter.isEnabled()
    dialog.endpoint.setText(server.endpoint)
    assert dialog.load_server_models() == ["llava:latest", "qwen2.5vl:7b"]
    assert [dialog.model.itemText(i) for i in range(dialog.model.count())] == ["llava:latest", "qwen2.5vl:7b"]
    dialog.max_concurrency.setValue(2)
    spec = dialog.spec()
    assert (spec.backend, spec.endpoint, spec.model, spec.adapter, spec.max_concurrency) == (
        "openai", server.endpoint, "llava:latest", None, 2)
    # Back to a local model: the spec has no endpoint (the field keeps the text for later).
    dialog.backend.setCurrentIndex(dialog.backend.findData("local"))
    assert (dialog.spec().backend, dialog.spec().endpoint) == ("local", None)
    dialog.backend.setCurrentIndex(dialog.backend.findData("openai"))
    dialog.endpoint.setText("localhost:11434")
    with pytest.raises(ValueError, match="must start with http"):
        dialog.spec()


def test_a_model_the_server_does_not_have_stops_the_job(library: Library, photo_dir: Path, server: FakeServer) -> None:
    _photos(library, photo_dir, [GREEN] * 3, size=(64, 48))
    server.script(strict_models=True)
    with pytest.raises(ModelLoadError, match="has no model 'llava:7b' .*not found, try pulling it first"):
        run_caption_job(library, _spec(server, model="llava:7b"))
    assert server.counters()["chat_requests"] <= 3  # not retried
    assert _current(library) == {}
    with library.db.read() as session:
        assert {im.state for im in session.scalars(select(Image))} == {ImageState.OK.value}


def test_the_cli_wants_the_servers_model_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from captiondesk.cli import main

    code = main(["--library", str(tmp_path / "lib.db"), "caption", "--all", "--backend", "openai",
                 "--endpoint", "http://127.0.0.1:9/v1"])
    assert code == 2
    assert "name the server's model with --model" in capsys.readouterr().err


@pytest.mark.slow
def test_two_cli_runs_at_once_share_the_server_work(library: Library, photo_dir: Path, server: FakeServer,
                                                    tmp_path: Path) -> None:
    """Two `caption` processes on one library at once: each photo is sent to the server once
    and has one caption row; the second run captions what the first has not claimed."""
    ids = _photos(library, photo_dir, [GREEN] * 24, size=(64, 48))
    library.close()
    server.script(delay=0.5)
    command = [sys.executable, "-m", "captiondesk", "--library", str(tmp_path / "library.db"), "caption", "--all",
               "--backend", "openai", "--endpoint", server.endpoint, "--model", "llava:latest", "--batch-size", "2",
               "--max-concurrency", "2", "--json"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "CAPTIONDESK_PROGRESS_INTERVAL": "0"}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert first.stderr is not None
    for line in first.stderr:  # the second starts once the first is captioning
        if line.startswith("Captioning:"):
            break
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    outputs = [json.loads(process.communicate(timeout=120)[0]) for process in (first, second)]
    assert [out["exit_code"] for out in outputs] == [0, 0], outputs
    assert sum(out["counts"]["captioned"] for out in outputs) == len(ids)
    assert outputs[1]["counts"]["captioned"] > 0  # it really shared the work
    # What a run skipped was held by the other run or already captioned by it (which of the
    # two depends on timing), never captioned twice.
    assert all(0 <= out["left_to_other_runs"] <= out["counts"]["skipped"] for out in outputs)
    assert server.counters()["chat_requests"] == len(ids)  # no photo sent twice
    with Library(tmp_path / "library.db") as reopened, reopened.db.read() as session:
        rows = session.scalars(select(Caption.image_id)).all()
    assert sorted(rows) == sorted(ids)  # one history row per photo


# -- hostile servers: the key in disguise, slow and huge answers ---------------------------


def _key_pieces_in(data: bytes | str, key: str = SECRET) -> list[str]:
    """Every run of 8 characters of *key* found in *data*, any case, JSON-escaped or not."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    unescaped = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)
    forms = (text.lower(), unescaped.lower())
    pieces = {key.lower()[i:i + 8] for i in range(len(key) - 7)}
    return sorted({p for form in forms for p in pieces if p in form})


def test_the_key_echoed_in_any_disguise_is_never_stored_printed_or_exported(
    library: Library, photo_dir: Path, server: FakeServer, tmp_path: Path
) -> None:
    _photos(library, photo_dir, [GREEN] * 6, size=(64, 48))
    library.close()
    # One request per photo; five of them echo the key back: as sent, lower-cased, its
    # first half, JSON-escaped in an error body, inside a 200 answer's caption.
    server.script(api_key=SECRET, queue=["echo-exact", "echo-lower", "echo-prefix", "echo-json", "echo-200"])
    db = tmp_path / "library.db"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "CAPTIONDESK_API_KEY": SECRET}
    done = subprocess.run(
        [sys.executable, "-m", "captiondesk", "--library", str(db), "caption", "--all", "--json",
         "--backend", "openai", "--endpoint", server.endpoint, "--model", "llava:latest", "--max-concurrency", "1"],
        capture_output=True, text=True, env=env, timeout=120)
    assert server.counters()["authorized"] == 6  # the key was sent with every request
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["counts"]["captioned"] == 1 and report["counts"]["errors"] == 5
    assert len([line for line in done.stderr.splitlines() if "error" in line]) == 5, done.stderr
    assert "the server's answer contains the API key; not stored" in done.stderr
    assert "Traceback" not in done.stderr

    with Library(db) as reopened:
        export_dataset(reopened, "csv", tmp_path / "export", val_ratio=0)
        texts = [c.text for c in _current(reopened).values()]
        assert texts == ["a 64x48 green photo"]
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("library.db*"))
    exported = b"".join(p.read_bytes() for p in (tmp_path / "export").rglob("*") if p.is_file())
    for where, data in (("library", stored), ("export", exported), ("stdout", done.stdout), ("stderr", done.stderr)):
        assert _key_pieces_in(data) == [], where
    assert b"***" in stored  # the server's messages are kept, the key masked


def test_a_secret_in_the_endpoints_query_string_is_never_shown_or_stored(
    library: Library, server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from captiondesk.cli import main

    secret = "qs-secret-0d9e8f7a6b5c"
    library.close()
    code = main(["--library", str(tmp_path / "library.db"), "caption", "--all", "--backend", "openai",
                 "--endpoint", f"{server.endpoint}?key={secret}", "--model", "llava:latest"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "must not have a query string" in err and "?***" in err
    assert secret not in out + err
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("library.db*"))
    assert secret.encode() not in stored
    assert server.counters()["chat_requests"] == 0


@pytest.mark.parametrize("url", ["http://h/v1?key=s3cr3t#frag", "http://u:s3cr3t@h/v1?x=1"])
def test_endpoint_errors_redact_every_secret_part(url: str) -> None:
    with pytest.raises(ValueError) as raised:
        normalize_endpoint(url)
    assert "s3cr3t" not in str(raised.value) and "***" in str(raised.value)


def test_huge_and_overlong_answers_are_that_images_error_and_do_not_grow_the_library(
    library: Library, photo_dir: Path, server: FakeServer, tmp_path: Path
) -> None:
    ids = _photos(library, photo_dir, [GREEN] * 3, size=(64, 48))
    library.close()  # the sizes are compared with everything in the main file
    before = sum(p.stat().st_size for p in tmp_path.glob("library.db*"))
    library = Library(tmp_path / "library.db")
    server.script(queue=["huge", "long"], huge_bytes=20 * 1024 * 1024, long_chars=5005)
    started = time.monotonic()
    stats = run_caption_job(library, _spec(server, max_concurrency=1, server_timeout=10))
    assert time.monotonic() - started < 10
    assert (stats.captioned, stats.errors) == (1, 2)
    problems = "\n".join(stats.problems)
    assert "the server's answer is longer than" in problems and "bytes; not read" in problems
    assert "the caption has 5,005 characters, more than the limit of 4,000; not stored" in problems
    assert server.counters()["bytes_sent"] < 20 * 1024 * 1024  # the client stopped reading
    with library.db.read() as session:
        assert max(len(t) for t in session.scalars(select(Caption.text))) < 100
        assert {im.state for im in session.scalars(select(Image))} == {ImageState.OK.value}
    assert sorted(_current(library)) == [ids[2]]
    params = library.jobs("caption")[-1].params
    assert (params["max_caption_chars"], params["server_timeout"]) == (4000, 10.0)
    library.close()
    after = sum(p.stat().st_size for p in tmp_path.glob("library.db*"))
    assert after - before < 3 * 4000


def test_a_huge_model_list_is_refused_without_reading_it_all(server: FakeServer) -> None:
    server.script(models_mode="huge", huge_bytes=40 * 1024 * 1024)
    with pytest.raises(ModelLoadError, match=r"did not list its models .*longer than 1,048,576 bytes; not read"):
        list_server_models(server.endpoint)
    time.sleep(0.2)
    assert server.counters()["bytes_sent"] < 2 * 20 * 1024 * 1024  # two lists asked, neither read whole


@pytest.mark.slow
def test_a_server_that_drips_its_answer_is_cut_off_at_the_deadline(
    library: Library, photo_dir: Path, server: FakeServer, tmp_path: Path
) -> None:
    _photos(library, photo_dir, [GREEN] * 2, size=(64, 48))
    library.close()
    db = str(tmp_path / "library.db")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "captiondesk", "--library", db, "caption", "--all", "--backend", "openai",
               "--endpoint", server.endpoint, "--model", "llava:latest", "--server-timeout", "1.5"]

    # One byte every half second, status line included: each request ends at the deadline.
    server.script(queue=["drip", "drip"])
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    requests_took = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if "did not finish within 1.5 s" in line]
    assert len(errors) == 2, done.stderr
    assert server.counters()["chat_requests"] == 2  # not retried
    assert "Traceback" not in done.stderr

    # Already the "can the server be reached" check is bounded.
    server.script(models_mode="drip")
    started = time.monotonic()
    failed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    check_took = time.monotonic() - started
    assert failed.returncode == 2
    assert "did not answer within 1.5 s" in failed.stderr and "Traceback" not in failed.stderr
    # Start-up aside (a few seconds), the bounds hold: 1.5 s per request, both in flight together.
    assert requests_took < 1.5 + 15 and check_took < 1.5 + 15
