"""The local backend picks up new versions while serving, and labels each answer by its version."""

import asyncio
import gc
import shutil
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi import HTTPException
from tf_alexnet_serving import Settings
from tf_alexnet_serving.classes import Answer, ClassNames
from tf_alexnet_serving.heap import freeze_long_lived, thaw
from tf_alexnet_serving.local import LocalBackend
from tf_alexnet_serving.routes import _predict_one_version

from tests.conftest import LiveServer, json_log_lines
from tf_alexnet import contract
from tf_alexnet.export import export

THREE_CLASSES = ["cat", "dög", "bird"]


@pytest.fixture(scope="module")
def three_class_model(tmp_path_factory):
    """An untrained 3-class mini AlexNet at 28 px, as a `.keras` file."""
    from tf_alexnet import AlexNet

    path = tmp_path_factory.mktemp("three") / "three.keras"
    AlexNet(variant="mini", input_shape=(28, 28, 1), classes=3, name="three").save(path)
    return path


@pytest.fixture
def publish_three_classes(three_class_model, test_images):
    """Exports the 3-class model as the next version in a base path, as `export` does."""

    def publish(base):
        export(three_class_model, base, sample_images=test_images[:1], class_names=THREE_CLASSES)

    return publish


# In process, the backends run with BF16=off: the bf16 rewrite is a process-wide TensorFlow
# option, and later tests in this process compare float32 graphs.


@pytest.fixture
def one_version(model_base, tmp_path):
    """A base path of our own holding a copy of `alexnet/1`."""
    base = tmp_path / "models"
    shutil.copytree(model_base / "alexnet" / "1", base / "alexnet" / "1")
    return base


def local_backend(base, **settings):
    """A local backend over `base` that swaps only when told (`reload`)."""
    return LocalBackend(
        Settings(model_base_path=str(base), **{"model_poll_s": 0, "bf16": "off", **settings})
    )


def test_local_backend_swaps_to_a_new_version_back_and_never_to_a_broken_one(
    one_version, publish_three_classes, test_images, events, tmp_path
):
    from tf_alexnet.model import AlexNet

    fashion = list(contract.default_class_names(10))
    keras_export = tmp_path / "keras-export"  # a SavedModel, but not a tf-alexnet export
    AlexNet(input_shape=(28, 28, 1), variant="mini", width=0.25).export(
        str(keras_export), verbose=False
    )

    async def main():
        backend = local_backend(one_version)
        await backend.start()
        try:
            first = await backend.predict(test_images[0])
            assert (first.version, len(first.probabilities)) == (1, 10)
            assert not await backend.reload()  # nothing new

            publish_three_classes(one_version)
            assert await backend.reload()
            second = await backend.predict(test_images[0])
            assert (second.version, len(second.probabilities)) == (2, 3)
            assert second.names.as_list() == THREE_CLASSES
            assert first.names.as_list() == fashion  # an earlier answer keeps its own labels
            assert backend.metadata()["version"] == 2
            assert backend.metadata()["class_names"] == THREE_CLASSES

            shutil.rmtree(one_version / "alexnet" / "2")  # the newest removed: back to 1
            assert await backend.reload()
            assert (await backend.predict(test_images[0])).version == 1

            broken = one_version / "alexnet" / "7"
            broken.mkdir()
            (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
            assert not await backend.reload()
            assert not await backend.reload()  # refused once, not tried again every poll
            shutil.copytree(keras_export, one_version / "alexnet" / "8")
            assert not await backend.reload()
            third = await backend.predict(test_images[0])
            assert (third.version, third.names.as_list()) == (1, fashion)

            shutil.rmtree(one_version / "alexnet")  # every version gone: keep serving
            assert not await backend.reload()
            assert not await backend.reload()  # said once
            assert (await backend.predict(test_images[0])).version == 1
            # Another model published as version 1 again: served, though the same number.
            publish_three_classes(one_version)
            assert await backend.reload()
            fourth = await backend.predict(test_images[0])
            assert (fourth.version, fourth.names.as_list()) == (1, THREE_CLASSES)
        finally:
            await backend.stop()

    asyncio.run(main())
    assert [(e["event"], e["version"]) for e in events.lines] == [
        ("model_loaded", 1),  # at start
        ("model_loaded", 2),
        ("model_loaded", 1),
        ("model_load_failed", 7),
        ("model_load_failed", 8),
        ("model_no_versions", 1),
        ("model_loaded", 1),
    ]
    assert events.lines[0]["previous_version"] is None
    assert events.lines[1]["previous_version"] == 1
    times = [line["time"] for line in events.lines]  # when: UTC, ISO 8601, in order
    assert times == sorted(times) and all(t.endswith("+00:00") for t in times)
    assert events.lines[1]["classes"] == 3
    assert events.lines[3]["serving"] == 1
    assert events.lines[3]["error"]  # the reason, on one line
    assert "\n" not in events.lines[3]["error"]
    assert (
        "is not a tf-alexnet export: its 'serving_default' signature takes 'image'"
        in (events.lines[4]["error"])
    )


def test_a_version_copied_in_halfway_is_loaded_once_the_copy_is_complete(one_version, events):
    """`cp -r` is not atomic: a poll can see `saved_model.pb` before the variables. That load
    fails; it is tried again once the folder's files change, not refused for good."""
    served, copy = one_version / "alexnet" / "1", one_version / "alexnet" / "2"

    async def main():
        backend = local_backend(one_version)
        await backend.start()
        try:
            copy.mkdir()
            shutil.copy2(served / "saved_model.pb", copy)  # the copy, caught halfway
            assert not await backend.reload()
            assert not await backend.reload()  # the same files: not tried again
            shutil.copytree(served, copy, dirs_exist_ok=True)  # the copy finishes
            assert await backend.reload()
            return backend.version
        finally:
            await backend.stop()

    assert asyncio.run(main()) == 2
    assert [(e["event"], e["version"]) for e in events.lines] == [
        ("model_loaded", 1),
        ("model_load_failed", 2),  # once, not at every poll
        ("model_loaded", 2),
    ]


def test_a_damaged_newest_version_is_skipped_at_start_and_after_a_removal(
    one_version, events, test_images
):
    """A truncated variables file in the newest version kept the server from starting (a
    traceback, exit 3) though version 1 was fine; and with the served version removed while a
    refused one sat above it, the removed version was served for ever."""
    from tests.conftest import run_cli

    served = one_version / "alexnet" / "1"
    damaged = one_version / "alexnet" / "2"
    shutil.copytree(served, damaged)
    variables = damaged / "variables" / "variables.data-00000-of-00001"
    variables.write_bytes(variables.read_bytes()[:1000])  # `cp -r` caught halfway
    predicted = run_cli(
        "predict",
        str(_image_file(one_version, test_images)),
        "--model",
        str(one_version / "alexnet"),
    )
    # predict, as the server below, passes the damaged version over and names it.
    assert predicted.returncode == 0, predicted.stderr
    (note,) = [line for line in predicted.stderr.splitlines() if line.startswith("Note: ")]
    assert note.startswith(
        f"Note: The exported model '{damaged}' does not load (damaged, or still being copied?): "
    )
    assert note.endswith(" Predicting with version 1.") and "Traceback" not in predicted.stderr
    assert predicted.stdout.startswith(str(_image_file(one_version, test_images)))

    async def main():
        backend = local_backend(one_version)
        await backend.start()
        try:
            started_on = backend.version
            shutil.copytree(served, one_version / "alexnet" / "3")
            assert await backend.reload()
            assert backend.version == 3
            shutil.rmtree(one_version / "alexnet" / "3")  # below it: 2 (refused), then 1
            assert await backend.reload()
            return started_on, backend.version, (await backend.predict(test_images[0])).version
        finally:
            await backend.stop()

    assert asyncio.run(main()) == (1, 1, 1)
    assert [(e["event"], e["version"]) for e in events.lines] == [
        ("model_load_failed", 2),  # at start, then not tried again as it is
        ("model_loaded", 1),
        ("model_loaded", 3),
        ("model_loaded", 1),
    ]
    assert events.lines[0]["serving"] is None


def _image_file(folder, test_images):
    path = folder / "shirt.png"
    path.write_bytes(test_images[0])
    return path


def test_polling_survives_a_failing_look_and_says_so_once(one_version, events, monkeypatch):
    """A model folder that cannot be read (permissions, a network mount gone) must not end the
    polling for good: the error is logged once, and the next good look swaps as usual."""
    from tf_alexnet_serving import local

    real, broken = local.version_numbers, {"looks": 3}

    def flaky(model_dir):
        if broken["looks"] > 0:
            broken["looks"] -= 1
            raise PermissionError(13, "Permission denied", str(model_dir))
        return real(model_dir)

    async def main():
        backend = local_backend(one_version, model_poll_s=0.05)
        monkeypatch.setattr(local, "version_numbers", flaky)  # the looks after start-up
        await backend.start()
        try:
            shutil.copytree(one_version / "alexnet" / "1", one_version / "alexnet" / "2")
            for _ in range(100):  # the three failing looks, then the swap
                await asyncio.sleep(0.05)
                if backend.version == 2:
                    return 2
            return backend.version
        finally:
            await backend.stop()

    assert asyncio.run(main()) == 2
    failed = [e for e in events.lines if e["event"] == "model_poll_failed"]
    assert len(failed) == 1 and "Permission denied" in failed[0]["error"]


def test_reloads_asked_at_once_load_the_new_version_once(one_version, events):
    async def main():
        backend = local_backend(one_version)
        await backend.start()
        try:
            shutil.copytree(one_version / "alexnet" / "1", one_version / "alexnet" / "2")
            return sorted(await asyncio.gather(backend.reload(), backend.reload()))
        finally:
            await backend.stop()

    assert asyncio.run(main()) == [False, True]
    assert [e["version"] for e in events.lines if e["event"] == "model_loaded"] == [1, 2]


def _toggle_version_2(base):
    """Publishes `alexnet/2` (a copy of 1), or removes it: either way, a swap to reload."""
    if (base / "alexnet" / "2").exists():
        shutil.rmtree(base / "alexnet" / "2")
    else:
        shutil.copytree(base / "alexnet" / "1", base / "alexnet" / "2")


def test_a_swap_frees_the_old_version_at_once(one_version):
    """The old version's graph lives in reference cycles: the backend collects them as it swaps,
    rather than leave them to Python's GC (with d2l, RSS grew 100-200 MB a swap without)."""

    async def main():
        backend = local_backend(one_version)
        await backend.start()
        left = []
        gc.disable()  # only the backend's own collection runs
        try:
            for _ in range(3):
                _toggle_version_2(one_version)
                assert await backend.reload()
                left.append(gc.collect())  # what the swap left for the GC to find
        finally:
            gc.enable()
            await backend.stop()
        return left

    left = asyncio.run(main())
    assert max(left) < 500, left  # measured: 0 each time; about 6,300 objects without it


def test_a_swap_frees_the_old_version_though_the_app_froze_it_at_start(one_version):
    """The app freezes what lives at start (`heap.freeze_long_lived`), the first version's graph
    with it: a swap's collection must look at frozen objects too, or that graph stays forever."""

    async def main():
        backend = local_backend(one_version)
        await backend.start()
        left = []
        gc.disable()  # only the backend's own collection runs
        try:
            freeze_long_lived()
            for _ in range(3):
                _toggle_version_2(one_version)
                assert await backend.reload()
                assert gc.get_freeze_count() > 0  # frozen again after the swap's collection
                gc.unfreeze()
                left.append(gc.collect())  # what the swap left, frozen or not
                gc.freeze()
        finally:
            thaw()
            gc.enable()
            await backend.stop()
        return left

    left = asyncio.run(main())
    assert max(left) < 500, left  # measured: about 6,300 objects a swap when left frozen


def test_a_pinned_version_is_never_swapped(one_version, three_class_model, test_images):
    async def main():
        backend = local_backend(one_version, model_version=1, model_poll_s=0.05)
        await backend.start()
        try:
            export(three_class_model, one_version, sample_images=test_images[:1])
            await asyncio.sleep(0.5)  # ten polls, were it polling
            return (await backend.predict(test_images[0])).version
        finally:
            await backend.stop()

    assert asyncio.run(main()) == 1


class Swapping:
    """A backend whose answers come from the versions given, in turn."""

    def __init__(self, versions):
        self.versions = iter(versions)
        self.calls = 0
        self.groups = []

    async def predict(self, image, group=None):
        self.calls += 1
        self.groups.append(group)
        return Answer(np.zeros(2), next(self.versions), ClassNames(None))


def test_a_requests_images_are_one_group_for_the_backend():
    """The backend's queue takes requests in turn (`TakeTurns`): it must know which images
    are one request's."""
    model = Swapping([1] * 5)
    asyncio.run(_predict_one_version(model, [b"png"] * 3))
    asyncio.run(_predict_one_version(model, [b"png"] * 2))
    first, second = model.groups[:3], model.groups[3:]
    assert len(set(map(id, first))) == 1 and len(set(map(id, second))) == 1
    assert first[0] is not None and first[0] is not second[0]


def test_a_request_split_across_two_versions_is_asked_again_once():
    async def answered(versions, images=2):
        model = Swapping(versions)
        results = await _predict_one_version(model, [b"png"] * images)
        return [r.version for r in results], model.calls

    assert asyncio.run(answered([1, 1])) == ([1, 1], 2)  # one version: asked once
    assert asyncio.run(answered([1, 2, 2, 2])) == ([2, 2], 4)  # split: asked again
    with pytest.raises(HTTPException) as refused:  # split twice: the client retries
        asyncio.run(answered([1, 2, 2, 3]))
    assert refused.value.status_code == 503
    assert refused.value.headers == {"Retry-After": "1"}


def _wait_for_answers(seen, version, each, clients=3, within_s=120):
    """Until each client has had `each` answers from `version` (two predictions apiece)."""
    deadline = time.monotonic() + within_s
    while True:
        now = list(seen)
        if any(s[1] != 200 for s in now):  # a failed answer: the test says which
            return
        counts = [sum(s[0] == me and s[2] == version for s in now) for me in range(clients)]
        if min(counts) >= 2 * each:
            return
        assert time.monotonic() < deadline, f"predictions from version {version}: {counts}"
        time.sleep(0.05)


@pytest.mark.slow
def test_live_server_moves_to_a_new_export_without_a_failed_or_mislabelled_answer(
    one_version, publish_three_classes, test_images, tmp_path
):
    """Clients keep asking while a 3-class version 2 is exported beside version 1."""
    fashion = set(contract.default_class_names(10))
    seen = []  # (client, status, version, class names in the answer, top-k length)
    stop = threading.Event()

    def client(url, me):
        files = [
            ("file", ("a.png", test_images[0], "image/png")),
            ("file", ("b.png", test_images[1], "image/png")),
        ]
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                response = http.post("/predict", files=files)
                body = response.json()
                if response.status_code != 200:
                    seen.append((me, response.status_code, None, body, 0))
                    continue
                for prediction in body["predictions"]:
                    names = {prediction["class_name"]} | {
                        c["class_name"] for c in prediction["top_k"]
                    }
                    version, top_k = body["model"]["version"], len(prediction["top_k"])
                    seen.append((me, 200, version, names, top_k))

    log = tmp_path / "serve.log"
    with LiveServer(one_version, {"TF_ALEXNET_SERVE_MODEL_POLL_S": "0.2"}, log) as server:
        threads = [threading.Thread(target=client, args=(server.url, me)) for me in range(3)]
        for thread in threads:
            thread.start()
        try:
            _wait_for_answers(seen, version=1, each=1)  # every client has had one
            publish_three_classes(one_version)
            _wait_for_answers(seen, version=2, each=3)  # more answers from version 2
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        metrics = httpx.get(f"{server.url}/metrics").text
        metadata = httpx.get(f"{server.url}/v1/metadata").json()

    assert [s for s in seen if s[1] != 200] == []
    for me in range(3):  # each client: version 1, then version 2, never back
        versions = [s[2] for s in seen if s[0] == me]
        assert versions[0] == 1 and versions[-1] == 2 and versions == sorted(versions)
    for _, _, version, names, top_k in seen:
        if version == 1:
            assert names <= fashion and top_k == 5
        else:
            assert names <= set(THREE_CLASSES) and top_k == 3  # all 3 classes, no 4th
    assert "tf_alexnet_model_version 2.0" in metrics
    assert (metadata["version"], metadata["class_names"]) == (2, THREE_CLASSES)
    lines = json_log_lines(log)
    events = [line for line in lines if "event" in line]
    assert [(e["event"], e["version"], e["previous_version"]) for e in events] == [
        ("model_loaded", 1, None),
        ("model_loaded", 2, 1),
    ]
    answered = {line["model_version"] for line in lines if line.get("path") == "/predict"}
    assert answered == {1, 2}  # the request log names the version that answered
