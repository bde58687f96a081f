"""The Gradio web app (`iis_hf.app`): its callbacks in process, and the real page in headless Chromium."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_model, cpu_subprocess_env, make_image_dataset, tiny_image_processor

import iis_hf
import iis_hf.explain
from iis_hf import app

RATIOS = (0.0, 0.5, 0.9)
LABELS = {0: "red", 1: "green", 2: "blue"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1600",
)
WAIT_S = 120  # generous: a loaded CI machine may take long to start Python, torch and Gradio


def has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


needs_gradio = pytest.mark.skipif(
    not has_module("gradio"), reason='gradio is not installed (pip install "iis-hf[app]")'
)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A tiny IIS model over prototype concepts (with thumbnails), heads at three ratios, and iis.json."""
    data = make_image_dataset(num_classes=3, per_class=10)
    torch.manual_seed(0)
    backbone = build_tiny_model("vit")
    backbone.config.id2label = dict(LABELS)
    backbone.config.label2id = {v: k for k, v in LABELS.items()}
    bank = iis_hf.ConceptBank.from_prototypes(
        backbone,
        data,
        image_processor=tiny_image_processor(),
        images_per_class=2,
        num_concepts=24,
        progress=False,
    )
    model = iis_hf.IISModelForImageClassification(backbone, bank, RATIOS).eval()
    with torch.no_grad():  # random heads would do; make the weights less uniform
        model.iis_head.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
    folder = tmp_path_factory.mktemp("app") / "model"
    model.save_pretrained(folder)
    tiny_image_processor().save_pretrained(folder)
    report = {
        "iis": 0.6,
        "standard_accuracy": 0.9,
        "accuracies": [0.9, 0.8, 0.6],
        "sparsity_ratios": list(RATIOS),
    }
    (folder / "iis.json").write_text(json.dumps(report), encoding="utf-8")
    return str(folder)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    """A synthetic PNG: a coloured square on noise, like the images the concepts came from."""
    path = tmp_path_factory.mktemp("app-images") / "synthetic.png"
    make_image_dataset(num_classes=3, per_class=2, seed=7)[3]["image"].save(path)
    return str(path)


# ---------------------------------------------------------------------------- in process
@needs_gradio
def test_callbacks_explain_like_explain_prediction(model_folder, image_file, tmp_path):
    status, ratios, curve, info, loaded = app.load_callback(model_folder)
    assert status.startswith("Loaded"), status
    assert [value for _name, value in ratios.choices] == list(RATIOS) and ratios.value == RATIOS[-1]
    assert curve.startswith(
        '<img class="iis-curve-image" src="data:image/png;base64,'
    )  # inline, from iis.json
    assert "IIS = 0.6000" in info
    assert app.load_model(model_folder) is app.load_model(loaded)  # loaded once per folder

    for ratio in RATIOS:
        status, labels, _backbone, page, raw = app.explain_callback(loaded, image_file, ratio, 5)
        expected = iis_hf.explain.explain_prediction(model_folder, image_file, sparsity_ratio=ratio, top_k=5)
        assert raw["label"] in LABELS.values()
        assert raw["label"] == expected.label and raw["sparsity_ratio"] == ratio
        assert raw["probability"] == pytest.approx(expected.probability, abs=1e-9)
        assert sum(raw["contributions"]) == pytest.approx(raw["logit"] - raw["bias"], abs=1e-9)
        assert raw["contributions"] == pytest.approx(expected.contributions, abs=1e-9)
        assert [c["contribution"] for c in raw["concepts"]] == pytest.approx(
            [c.contribution for c in expected.concepts], abs=1e-9
        )
        assert max(labels, key=labels.get) == expected.label
        assert f"Predicted **{expected.label}**" in status
        # The page lists each top concept once, supporting or opposing, each with its source patch.
        assert page.count('class="iis-concept"') == len(expected.concepts) == page.count('class="iis-thumb"')
        assert page.count("iis-supporting") + page.count("iis-opposing") == 2
        assert f'data-label="{expected.label}"' in page


@needs_gradio
def test_callbacks_report_errors_in_the_page(model_folder, image_file, tmp_path):
    bad_image = tmp_path / "broken.png"
    bad_image.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    status, labels, backbone, page, raw = app.explain_callback(model_folder, str(bad_image), 0.5, 5)
    # The message comes from iis-hf's image reader (its wording is its own): it names the file.
    assert status.startswith("**Error:**") and "broken.png" in status.replace("\\", "")
    assert (labels, backbone, page, raw) == (None, None, "", None)

    status, *_ = app.explain_callback(model_folder, image_file, 0.3, 5)
    assert status.startswith("**Error:**") and "no interpretation head for sparsity ratio 0.3" in status
    assert app.explain_callback(None, image_file, 0.5, 5)[0] == "Load a model first."
    assert app.explain_callback(model_folder, None, 0.5, 5)[0] == "Upload an image to explain."

    status, *_rest, kept = app.load_callback(str(tmp_path / "missing"), current=model_folder)
    assert status.startswith("**Error:**") and "does not exist" in status
    assert kept == model_folder  # a failed load leaves the loaded model in place
    status, *_ = app.load_callback(str(tmp_path))  # a folder, but no IIS model in it
    assert status.startswith("**Error:**")


@needs_gradio
def test_visitors_open_only_the_models_the_app_serves(model_folder, tmp_path):
    """A visitor's model name is checked against the served list; a failure says nothing about disk."""
    policy = app.as_policy(model_folder, allow_any_model=False)
    assert app.load_callback(model_folder, policy=policy)[0].startswith("Loaded")
    existing, missing = str(tmp_path), str(tmp_path / "missing")
    for name in (existing, missing, "/etc", "someone/some-model"):
        status, *_rest, kept = app.load_callback(name, current=model_folder, policy=policy)
        assert status.startswith("**Error:**") and "is not a model this app serves" in status, status
        assert kept == model_folder
    # --allow-any-model: any name may be tried, and every failure reads the same but for the name.
    anything = app.as_policy([], allow_any_model=True)
    assert app.load_callback(model_folder, policy=anything)[0].startswith("Loaded")
    messages = {
        app.load_callback(name, policy=anything)[0].replace(app._md(repr(name)), "NAME")
        for name in (existing, missing, str(tmp_path / "config.json"), "/etc/passwd")
    }
    assert len(messages) == 1, messages
    assert "exist" not in messages.pop()


@needs_gradio
def test_an_upload_is_read_only_from_the_upload_folder_and_then_deleted(monkeypatch, tmp_path, image_file):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))

    def upload(name: str, data: bytes):
        folder = uploads / "0123abcd"  # Gradio stores each upload in a folder of its own
        folder.mkdir(exist_ok=True)
        (folder / name).write_bytes(data)
        return {"path": str(folder / name), "meta": {"_type": "gradio.FileData"}}

    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0 the server's own file")
    (uploads / "link.png").symlink_to(secret)
    for payload in (
        {"path": str(secret)},
        {"path": image_file},  # an image on the server, outside the upload folder
        {"path": str(uploads / "link.png")},  # inside, but a link to a file outside
        {"path": str(uploads / "0123abcd" / ".." / ".." / "secret.txt")},
        {"path": str(uploads)},
        {"url": "file:///etc/passwd"},
        "/etc/passwd",
        42,
    ):
        with pytest.raises(ValueError) as refused:
            app.read_upload(payload)
        assert str(refused.value) == app.NOT_UPLOADED
        assert "root" not in str(refused.value)
    status = app.upload_callback(None, {"path": str(secret)})[1]
    assert status == f"**Error:** {app._md(app.NOT_UPLOADED)}"

    from PIL import Image

    image = app.read_upload(upload("photo.png", Path(image_file).read_bytes()))
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert not (uploads / "0123abcd").exists()  # deleted once decoded
    with pytest.raises(ValueError, match=r"^the image is 10\.0 MB; this app takes images up to 10 MB$"):
        app.read_upload(upload("big.png", b"\0" * (app.MAX_UPLOAD_BYTES + 1)))
    huge = tmp_path / "huge.png"
    Image.new("RGB", (5000, 4000)).save(huge)  # 20 megapixels, a small file
    with pytest.raises(ValueError, match="too many pixels: this app takes images up to 16,777,216 pixels"):
        app.read_upload(upload("huge.png", huge.read_bytes()))
    assert not any(path.is_file() for path in uploads.rglob("*") if path.name != "link.png")


def test_a_missing_gradio_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    with pytest.raises(ValueError, match=r'pip install "iis-hf\[app\]"'):
        app.build_app()
    with pytest.raises(ValueError, match=r'pip install "iis-hf\[app\]"'):
        app.main(["--port", "0"])


def test_command_line_defaults(monkeypatch):
    for name in ("IIS_HF_MODEL", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"):
        monkeypatch.delenv(name, raising=False)
    args = app.build_arg_parser().parse_args([])
    assert (args.model, args.host, args.port, args.share, args.allow_any_model) == (
        None,
        "127.0.0.1",
        7860,
        False,
        False,
    )
    with pytest.raises(ValueError, match="name the model to serve: --model"):
        app.served_models(args)  # no model and no --allow-any-model: nothing to serve
    assert app.served_models(app.build_arg_parser().parse_args(["--allow-any-model"])) == []
    monkeypatch.setenv("IIS_HF_MODEL", "someone/some-iis-model")  # how a Space names its model
    args = app.build_arg_parser().parse_args(["--port", "8000", "--share"])
    assert (app.served_models(args), args.port, args.share) == (["someone/some-iis-model"], 8000, True)
    args = app.build_arg_parser().parse_args(["--model", "out/x", "--model", "out/y"])
    assert app.served_models(args) == ["out/x", "out/y"]


# ---------------------------------------------------------------------------- over plain HTTP
def call_endpoint(url: str, api_name: str, data: list) -> str:
    """POST to Gradio's /call/<api_name> and return the event stream's text (its last event)."""
    request = urllib.request.Request(
        f"{url}gradio_api/call/{api_name}",
        data=json.dumps({"data": data}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=WAIT_S) as response:
        event_id = json.loads(response.read())["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call/{api_name}/{event_id}", timeout=WAIT_S) as response:
        return response.read().decode("utf-8", errors="replace")


def upload_file(url: str, name: str, data: bytes) -> tuple[int, str]:
    """POST a file to Gradio's upload route as a browser does, in 1 MB pieces (a server that refuses a
    big upload answers before reading it all): (HTTP status, body)."""
    import http.client
    import urllib.parse

    boundary = "iis-hf-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + data + f"\r\n--{boundary}--\r\n".encode()
    address = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=WAIT_S)
    try:
        connection.putrequest("POST", "/gradio_api/upload")
        connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders()
        try:
            for start in range(0, len(body), 2**20):
                connection.send(body[start : start + 2**20])
        except OSError:  # the server stopped reading: its answer is waiting
            pass
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


@needs_gradio
def test_a_client_of_the_running_app_gets_only_what_it_sends(model_folder, image_file, tmp_path):
    """Against the real server on 127.0.0.1: server paths in a payload, the model box, big uploads."""
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:the server's own file\n")
    uploads = tmp_path / "uploads"
    process, url = start_server(model_folder, tmp_path / "app.log", uploads)
    try:
        for path in (str(secret), image_file):  # a server file, and a server image it could classify
            answer = call_endpoint(
                url, "upload", [{"path": path, "meta": {"_type": "gradio.FileData"}}, 0.5, 5]
            )
            assert "event: error" in answer and "Predicted" not in answer, answer
            assert "root" not in answer and "server's own" not in answer

        status, body = upload_file(url, "image.png", Path(image_file).read_bytes())  # the control
        assert status == 200, body
        answer = call_endpoint(
            url, "upload", [{"path": json.loads(body)[0], "meta": {"_type": "gradio.FileData"}}, 0.5, 5]
        )
        assert "event: complete" in answer and "Predicted" in answer, answer
        assert not [path for path in uploads.rglob("*") if path.is_file()]  # deleted after the request

        answers = [
            call_endpoint(url, "load_model", [name]).replace(name, "NAME")
            for name in (str(tmp_path), str(tmp_path / "missing"))  # an existing folder, a missing one
        ]
        assert answers[0] == answers[1] and "event: error" in answers[0], answers

        status, body = upload_file(url, "big.png", b"\0" * (60 * 2**20))
        assert status == 413 and len(body.splitlines()) == 1 and "maximum allowed size" in body, (
            status,
            body,
        )
        assert not [path for path in uploads.rglob("*") if path.is_file()]
    finally:
        stop_server(process)


# ---------------------------------------------------------------------------- in a real browser
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(folder: str, log_path, upload_folder=None) -> tuple[subprocess.Popen, str]:
    """`python -m iis_hf.app --model FOLDER` on a free port; returns once the page answers.

    `upload_folder`: Gradio's upload folder for this server ($GRADIO_TEMP_DIR), for a test to look into."""
    for _attempt in range(3):  # another process may take the free port before the server binds it
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        env = {**cpu_subprocess_env(), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
        if upload_folder is not None:
            env["GRADIO_TEMP_DIR"] = str(upload_folder)
        command = [
            sys.executable,
            "-m",
            "iis_hf.app",
            "--model",
            folder,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        with open(log_path, "ab") as log:  # the child keeps its own copy of the file descriptor
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return process, url
            except OSError:
                time.sleep(0.5)
        stop_server(process)
    raise AssertionError(f"the app did not start; its log:\n{log_path.read_text(errors='replace')[-4000:]}")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def headless_chromium(profile_dir):
    """Selenium's Chrome driver on Debian's chromium + chromedriver, headless, with a fresh profile."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT_S)
    return driver


def skip_without_browser():
    missing = [
        name
        for name, present in (
            ("gradio (pip install gradio)", has_module("gradio")),
            ("selenium (pip install selenium)", has_module("selenium")),
            ("chromium (apt-get install chromium)", CHROMIUM is not None),
            ("chromedriver (apt-get install chromium-driver)", CHROMEDRIVER is not None),
        )
        if not present
    ]
    if missing:
        pytest.skip(f"the browser test needs {', '.join(missing)}")


def test_the_page_explains_an_uploaded_image_in_headless_chromium(model_folder, image_file, tmp_path):
    skip_without_browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    uploads = tmp_path / "uploads"
    process, url = start_server(model_folder, tmp_path / "app.log", uploads)
    driver = None
    try:
        driver = headless_chromium(tmp_path / "chromium-profile")
        wait = WebDriverWait(driver, WAIT_S, poll_frequency=0.25)

        def css(selector):
            return driver.find_elements(By.CSS_SELECTOR, selector)

        def result_at(ratio: float):
            """The explanation element once it shows the head at `ratio` (None until then)."""
            found = css(f'#iis-explanation .iis-result[data-ratio="{ratio:g}"]')
            return found[0] if found else None

        driver.get(url)
        # The model given on the command line is loaded when the page opens: one radio per head.
        wait.until(lambda d: len(css("#iis-ratio input[type=radio]")) == len(RATIOS))
        wait.until(lambda d: "Loaded" in css("#iis-status")[0].text)
        wait.until(lambda d: css("#iis-curve img"))  # the IIS curve plotted from iis.json

        # Upload through the page's own file input: the upload triggers the explanation (default ratio).
        css("#iis-image input[type=file]")[0].send_keys(image_file)
        wait.until(lambda d: result_at(RATIOS[-1]))

        # Choose another head: the explanation follows.
        radio = next(label for label in css("#iis-ratio label") if label.text.strip() == "0.5")
        radio.click()
        result = wait.until(lambda d: result_at(0.5))
        shown_label = result.find_element(By.CSS_SELECTOR, ".iis-predicted-label").text.strip()
        shown_probability = result.find_element(By.CSS_SELECTOR, ".iis-probability").text.strip()
        expected = iis_hf.explain.explain_prediction(
            model_folder, image_file, sparsity_ratio=0.5, top_k=app.DEFAULT_TOP_K
        )
        assert shown_label == expected.label
        assert f"Predicted {expected.label}" in css("#iis-explain-status")[0].text
        assert shown_probability == f"{expected.probability:.3f}"
        rows = result.find_elements(By.CSS_SELECTOR, "tr.iis-concept")
        assert len(rows) == len(expected.concepts)
        assert len(result.find_elements(By.CSS_SELECTOR, "img.iis-thumb")) == len(expected.concepts)
        supporting = [c.label for c in expected.concepts if c.contribution >= 0]
        opposing = [c.label for c in expected.concepts if c.contribution < 0]
        assert [
            row.find_element(By.CSS_SELECTOR, ".iis-concept-name").text for row in rows
        ] == supporting + opposing

        # The Explain button reruns it with the top-k control's value, on the image kept in the session.
        number = css("#iis-top-k input[type=number]")[0]
        number.clear()
        number.send_keys("3")
        css("#iis-explain")[0].click()
        wait.until(lambda d: css('#iis-explanation .iis-result[data-ratio="0.5"][data-top-k="3"]'))
        assert len(css("#iis-explanation tr.iis-concept")) == 3
        # The upload was decoded into the session and deleted: reruns need no file on the server.
        assert not [path for path in uploads.rglob("*") if path.is_file()]
    except Exception:
        if driver is not None:  # what the page looked like, for whoever debugs a failure
            driver.save_screenshot(str(tmp_path / "failure.png"))
            print(f"screenshot: {tmp_path / 'failure.png'}; app log: {tmp_path / 'app.log'}")
        raise
    finally:
        if driver is not None:
            driver.quit()
        stop_server(process)


# ---------------------------------------------------------------------------- what the page offers
@needs_gradio
def test_the_ratio_selector_lists_every_ratio_the_heads_were_trained_at(model_folder):
    _status, ratios, _curve, _info, loaded = app.load_callback(model_folder)
    assert [value for _name, value in ratios.choices] == list(RATIOS)  # every head, not only one
    model = app.load_model(loaded)
    assert model.ratio_choices() == [(f"{r:g}", r) for r in RATIOS]
    assert "0, 0.5, 0.9" in model.ratio_note() and "fitted afresh" not in model.ratio_note()
    # A fine-tuned model carries heads at its loss ratios; its IIS curve has a whole grid.
    grid = [0.0, 0.1, 0.5, 0.9, 0.98]
    curve = iis_hf.IISResult(iis=0.6, standard_accuracy=0.9, accuracies=[0.9] * 5, sparsity_ratios=grid)
    finetuned = app.LoadedModel("m", model.classifier, curve)
    note = finetuned.ratio_note()
    assert "(0.1, 0.98) were scored with heads fitted afresh" in note, note


@needs_gradio
def test_the_backbones_own_prediction_is_shown_beside_the_one_from_concepts(model_folder, image_file):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from iis_hf.images import load_image

    backbone = AutoModelForImageClassification.from_pretrained(model_folder).eval()
    processor = AutoImageProcessor.from_pretrained(model_folder)
    with torch.no_grad():
        pixels = processor(images=[load_image(image_file)], return_tensors="pt")["pixel_values"]
        probabilities = backbone(pixel_values=pixels).logits.softmax(-1)[0]
    expected = LABELS[int(probabilities.argmax())]

    status, concepts, own, page, raw = app.explain_callback(model_folder, image_file, 0.5, 5)
    assert max(own, key=own.get) == expected and own[expected] == pytest.approx(float(probabilities.max()))
    assert raw["backbone_predictions"][0]["label"] == expected
    assert f"the backbone's own classifier predicts **{expected}**" in status
    assert status.index("from concepts") < status.index("backbone")  # the concept one first, then its own
    assert f'<b class="iis-backbone-label">{expected}</b>' in page
    assert set(concepts) <= set(LABELS.values())
