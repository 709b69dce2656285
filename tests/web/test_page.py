"""The web page at `/` in a real browser against the running service: uploads, live status, boxes,
the slider, rejected files, recent jobs, API keys, and a phone-width screen driven by the keyboard."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import Locator, Page, expect

from tests.e2e.stack import Service, wait_finished
from tests.web.conftest import API_KEY, MAX_IMAGE_BYTES, PageFactory

pytestmark = pytest.mark.slow

# A job on the idle worker takes well under a second; a minute means it is stuck.
JOB_MS = 60_000
# The page's first page of recent jobs (app.js RECENT_PAGE).
RECENT_PAGE = 10
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshot.png"


def _upload(page: Page, *paths: Path) -> None:
    # The <input type=file> is hidden behind the drop zone button; Playwright fills it directly.
    page.set_input_files("#file-input", list(paths))


def _upload_item(page: Page, name: str) -> Locator:
    return page.locator("#uploads .job").filter(has=page.locator(".job-name", has_text=name))


def _wait_succeeded(page: Page, name: str) -> None:
    expect(_upload_item(page, name)).to_have_attribute("data-status", "succeeded", timeout=JOB_MS)


def _job(service: Service, job_id: str) -> dict[str, Any]:
    response = service.client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def _shown_job(page: Page, service: Service, name: str) -> dict[str, Any]:
    job_id = _upload_item(page, name).get_attribute("data-job-id")
    assert job_id
    return _job(service, job_id)


def _drawn(page: Page) -> list[dict[str, Any]]:
    """The boxes on the overlay: label, class id, confidence, the frame's corners, its colour."""
    drawn: list[dict[str, Any]] = page.eval_on_selector_all(
        "#overlay g.box",
        """groups => groups.map(g => {
            const frame = g.querySelector("rect.box-frame");
            const corner = (name) => Number(frame.getAttribute(name));
            return {
                label: g.dataset.label,
                class_id: Number(g.dataset.classId),
                confidence: Number(g.dataset.confidence),
                text: g.querySelector("text.box-label").textContent,
                x1: corner("x"), y1: corner("y"),
                x2: corner("x") + corner("width"), y2: corner("y") + corner("height"),
                stroke: frame.getAttribute("stroke"),
            };
        })""",
    )
    return drawn


def _assert_no_horizontal_scroll(page: Page, width: int) -> None:
    scroll_width = page.evaluate("document.scrollingElement.scrollWidth")
    assert scroll_width <= width, f"the page is {scroll_width} px wide on a {width} px screen"


def test_an_uploaded_photo_gets_its_boxes_and_labels_drawn_in_class_colours(
    service: Service, new_page: PageFactory, sample_paths: dict[str, Path], tmp_path: Path
) -> None:
    page = new_page(str(service.client.base_url))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    expect(page.locator("#model option:checked")).to_have_text("yolov4-tiny")
    _upload(page, sample_paths["bus.jpg"])
    _wait_succeeded(page, "bus.jpg")
    job = _shown_job(page, service, "bus.jpg")
    # The status came live over the job's event stream, not by polling the job.
    base = str(service.client.base_url)
    assert requests.count(f"{base}/v1/jobs/{job['id']}/events") == 1
    assert f"{base}/v1/jobs/{job['id']}" not in requests
    expect(page.locator("#result-status")).to_have_text("Done")
    expect(page.locator("#overlay g.box")).to_have_count(len(job["detections"]))

    drawn = sorted(_drawn(page), key=lambda d: -d["confidence"])
    assert len(drawn) >= 4
    assert {"bus", "person"} <= {d["label"] for d in drawn}
    for box, detection in zip(drawn, job["detections"], strict=True):
        assert box["label"] == detection["label"]
        assert box["text"] == f"{detection['label']} {detection['confidence']:.2f}"
        # In the image's own pixels: the SVG's viewBox is the full-resolution image.
        for corner in ("x1", "y1", "x2", "y2"):
            assert box[corner] == pytest.approx(detection["box"][corner], abs=1e-3)
    # One colour per class, a different one for each class.
    colours = {d["class_id"]: d["stroke"] for d in drawn}
    assert all(d["stroke"] == colours[d["class_id"]] for d in drawn)
    assert len(set(colours.values())) == len(colours)
    assert page.get_attribute("#overlay", "viewBox") == "0 0 810 1080"

    rows = page.locator("#detections tbody tr")
    expect(rows).to_have_count(len(drawn))
    first = rows.first.locator("td")
    top = drawn[0]
    expect(first).to_have_text(
        [
            top["label"],
            f"{top['confidence']:.3f}",
            ", ".join(str(round(top[k])) for k in ("x1", "y1", "x2", "y2")),
        ]
    )
    link = page.locator("#annotated")
    expect(link).to_be_visible()
    assert link.get_attribute("href") == f"/v1/jobs/{job['id']}/annotated"
    assert page.evaluate("document.getElementById('stage-image').naturalWidth") == 810

    page.screenshot(path=tmp_path / "desktop.png")
    if os.environ.get("VISIONQ_UPDATE_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(tmp_path / "desktop.png", DOCS_SCREENSHOT)


def test_the_slider_hides_the_boxes_below_its_confidence_without_asking_the_service(
    service: Service, new_page: PageFactory, sample_paths: dict[str, Path]
) -> None:
    page = new_page(str(service.client.base_url))
    _upload(page, sample_paths["bus.jpg"])
    _wait_succeeded(page, "bus.jpg")
    detections = _shown_job(page, service, "bus.jpg")["detections"]
    boxes = page.locator("#overlay g.box")
    expect(boxes).to_have_count(len(detections))
    expect(page.locator("#threshold")).to_have_value("0.25")

    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.locator("#threshold").fill("0.8")
    above = [d for d in detections if d["confidence"] >= 0.8]
    assert 0 < len(above) < len(detections), "bus.jpg has boxes on both sides of 0.8"
    expect(boxes).to_have_count(len(above))
    expect(page.locator("#detections tbody tr")).to_have_count(len(above))
    expect(page.locator("#threshold-value")).to_have_text("0.80")
    expect(page.locator("#shown-count")).to_have_text(f"{len(above)} of {len(detections)} detections shown")
    assert sorted(d["confidence"] for d in _drawn(page)) == pytest.approx(
        sorted(d["confidence"] for d in above)
    )

    # A real <input type=range>: the keyboard moves it too.
    page.locator("#threshold").press("End")
    expect(boxes).to_have_count(0)
    page.locator("#threshold").press("Home")
    expect(boxes).to_have_count(len(detections))
    assert requests == []


def test_a_rejected_file_shows_the_services_message_beside_that_file(
    service: Service, new_page: PageFactory, sample_paths: dict[str, Path], tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture, just words\n" * 20)
    huge = tmp_path / "huge.jpg"
    huge.write_bytes(b"\xff\xd8\xff" + bytes(MAX_IMAGE_BYTES + 100_000))
    expected = {}
    for path, status in ((notes, 415), (huge, 413)):
        answer = service.client.post("/v1/jobs", files={"image": (path.name, path.read_bytes())})
        assert answer.status_code == status, answer.text
        expected[path.name] = answer.json()["error"]["message"]

    page = new_page(str(service.client.base_url))
    _upload(page, notes, sample_paths["bus.jpg"], huge)
    for name, message in expected.items():
        item = _upload_item(page, name)
        expect(item).to_have_attribute("data-status", "rejected")
        expect(item.locator(".status")).to_have_text("Rejected")
        expect(item.locator(".job-error")).to_have_text(message)
        expect(item.locator(".job-error")).to_be_visible()
    # The good file in the same batch is not held back by the bad ones.
    _wait_succeeded(page, "bus.jpg")
    expect(_upload_item(page, "bus.jpg").locator(".job-error")).to_be_hidden()


def test_three_images_dropped_at_once_become_three_jobs_that_all_finish(
    service: Service, new_page: PageFactory, sample_paths: dict[str, Path], tmp_path: Path
) -> None:
    mirrored = tmp_path / "bus-mirrored.jpg"
    with Image.open(sample_paths["bus.jpg"]) as bus:
        bus.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored, quality=90)
    names = ["bus.jpg", "zidane.jpg", mirrored.name]
    page = new_page(str(service.client.base_url))
    _upload(page, sample_paths["bus.jpg"], sample_paths["zidane.jpg"], mirrored)

    expect(page.locator("#uploads .job")).to_have_count(3)
    expect(page.locator("#uploads .job-name")).to_have_text(names)
    ids = set()
    for name in names:
        _wait_succeeded(page, name)
        job = _shown_job(page, service, name)
        assert job["status"] == "succeeded"
        expect(_upload_item(page, name).locator(".job-sub")).to_contain_text(
            f"{len(job['detections'])} objects"
        )
        ids.add(job["id"])
    assert len(ids) == 3
    # The first file is the one shown; another opens with a click, with its own boxes.
    expect(page.locator("#overlay")).to_have_attribute("viewBox", "0 0 810 1080")
    _upload_item(page, "zidane.jpg").locator(".job-open").click()
    zidane = _shown_job(page, service, "zidane.jpg")
    expect(page.locator("#overlay")).to_have_attribute("viewBox", "0 0 1280 720")
    expect(page.locator("#overlay g.box")).to_have_count(len(zidane["detections"]))


def test_an_older_job_is_reopened_from_the_recent_list_after_paging_on(
    service: Service, new_page: PageFactory, samples: dict[str, bytes]
) -> None:
    def submit(name: str) -> str:
        answer = service.client.post("/v1/jobs", files={"image": (name, samples[name], "image/jpeg")})
        assert answer.status_code == 202, answer.text
        job_id: str = answer.json()["id"]
        return job_id

    older = submit("zidane.jpg")
    finished = wait_finished(service.client, older)
    assert finished["status"] == "succeeded"
    newer = [submit("bus.jpg") for _ in range(RECENT_PAGE)]

    page = new_page(str(service.client.base_url))
    recent = page.locator("#recent .job")
    expect(recent).to_have_count(RECENT_PAGE)
    assert [item.get_attribute("data-job-id") for item in recent.all()] == newer[::-1]
    expect(page.locator("#more")).to_be_visible()
    page.locator("#more").click()
    item = page.locator(f'#recent .job[data-job-id="{older}"]')
    expect(item).to_have_count(1)
    item.locator(".job-open").click()

    detections = _job(service, older)["detections"]
    assert detections
    expect(page.locator("#result-title")).to_have_text(f"Job {older[:8]}")
    expect(page.locator("#overlay g.box")).to_have_count(len(detections))
    # The original image, from GET /v1/jobs/{id}/image (this browser never had the file).
    page.wait_for_function("document.getElementById('stage-image').naturalWidth === 1280")


def test_behind_api_keys_the_page_asks_for_the_key_once_and_then_works(
    keyed_service: Service, new_page: PageFactory, sample_paths: dict[str, Path], tmp_path: Path
) -> None:
    client = keyed_service.client
    # The page itself stays open (it must load to ask for the key); the API does not.
    for path in ("/", "/static/app.js", "/static/style.css"):
        assert client.get(path).status_code == 200, path
    assert client.get("/v1/models").json()["error"]["code"] == "unauthorized"
    assert not {"/", "/static"} & set(client.get("/openapi.json").json()["paths"])

    page = new_page(str(client.base_url))
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    page.locator("#key-input").fill("vq_not-the-key-at-all-000000")
    page.locator("#key-submit").click()
    expect(dialog).to_be_visible()
    expect(page.locator("#key-reason")).to_contain_text("refused")
    page.screenshot(path=tmp_path / "key-form.png")
    page.locator("#key-input").fill(API_KEY)
    page.locator("#key-submit").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#model option:checked")).to_have_text("yolov4-tiny")
    assert page.evaluate("sessionStorage.getItem('visionq.apiKey')") == API_KEY
    assert page.evaluate("localStorage.length") == 0

    _upload(page, sample_paths["bus.jpg"])
    _wait_succeeded(page, "bus.jpg")
    job_id = _upload_item(page, "bus.jpg").get_attribute("data-job-id")
    expect(page.locator("#overlay g.box").first).to_be_visible()
    with page.expect_download() as download:
        page.locator("#annotated").click()
    saved = download.value.path()
    assert saved.read_bytes()[:3] == b"\xff\xd8\xff"

    # A reload keeps the key (same tab): no prompt, and the reopened job's image comes as a blob.
    page.reload()
    item = page.locator(f'#recent .job[data-job-id="{job_id}"]')
    item.locator(".job-open").click()
    expect(page.locator("#overlay g.box").first).to_be_visible()
    page.wait_for_function("document.getElementById('stage-image').naturalWidth === 810")
    src = page.get_attribute("#stage-image", "src")
    assert src is not None and src.startswith("blob:")
    expect(dialog).to_be_hidden()


def test_on_a_phone_the_page_fits_and_an_upload_works_from_the_keyboard(
    service: Service, new_page: PageFactory, sample_paths: dict[str, Path], tmp_path: Path
) -> None:
    page = new_page(str(service.client.base_url), viewport={"width": 390, "height": 844})
    # Playwright asks the browser to hand it file choosers without waiting for the answer: listening
    # from the start, several round trips before Enter, keeps the chooser from opening unseen.
    page.on("filechooser", lambda _: None)
    _assert_no_horizontal_scroll(page, 390)
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "dropzone":
            break
    else:
        pytest.fail("Tab never reached the drop zone")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "the focused drop zone shows no focus ring"
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    assert chooser.value.is_multiple()
    chooser.value.set_files(sample_paths["bus.jpg"])
    _wait_succeeded(page, "bus.jpg")
    expect(page.locator("#overlay g.box").first).to_be_visible()
    expect(page.locator("#detections tbody tr").first).to_be_visible()
    _assert_no_horizontal_scroll(page, 390)
    page.screenshot(path=tmp_path / "phone.png", full_page=True)


def test_the_event_stream_parser_reads_events_split_anywhere(service: Service, new_page: PageFactory) -> None:
    page = new_page(str(service.client.base_url))
    stream = (
        ': keep-alive\r\nevent: job\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
        "data:plain\n\n"
        ": bye\r\revent: job\rdata: 2\r\r"
    )
    # Every split of the stream into two chunks, the \r\n of a line break included, reads the same.
    results = page.evaluate(
        """async (stream) => {
            const { EventStreamParser } = await import("/static/events.js");
            const splits = [];
            for (let cut = 0; cut <= stream.length; cut++) {
                const parser = new EventStreamParser();
                splits.push([
                    ...parser.push(stream.slice(0, cut)), ...parser.push(stream.slice(cut)), ...parser.end(),
                ]);
            }
            return splits;
        }""",
        stream,
    )
    expected = [
        {"event": "job", "data": '{"a":\n1}'},
        {"event": "message", "data": "plain"},
        {"event": "job", "data": "2"},
    ]
    assert results == [expected] * (len(stream) + 1)
