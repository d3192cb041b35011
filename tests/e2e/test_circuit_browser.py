"""The circuit page in a real browser: find a circuit, click a kept head, see its attention pattern; download the
circuit and compare it with an uploaded one."""

import json
from pathlib import Path

from tests.e2e.browser_helpers import (
    ARTIFACTS,
    FIRST_LOAD_MS,
    hover_plotly_point,
    next_frames,
    rerun_settled,
    stable_box,
    wait_for_app,
)


def test_find_circuit_click_kept_head_see_pattern_and_compare(page, app_url, tmp_path):
    wait_for_app(page, f"{app_url}/circuit")
    page.wait_for_selector("text=Find circuit", timeout=FIRST_LOAD_MS)
    assert "Circuit" in page.locator('[data-testid="stSidebarNav"]').inner_text()
    prompts = page.get_by_role("spinbutton", name="Prompts")
    prompts.fill("2")
    rerun_settled(page, lambda: prompts.press("Enter"))
    rerun_settled(page, page.get_by_text("One pass only").click)
    page.get_by_role("button", name="Find circuit").click()
    page.wait_for_selector('[data-testid="stMetric"]', timeout=900_000)
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    chart.wait_for(timeout=60_000)
    stable_box(chart)  # the layout settles once the progress bar is gone
    page.screenshot(path=str(ARTIFACTS / "circuit-found.png"), full_page=True)
    legend = chart.locator(".legendtext").all_text_contents()  # SVG text has no innerText
    assert legend[0] == "kept head" and "removed" in legend
    kept_points = chart.locator(".scatterlayer .trace").first.locator("path.point")
    assert kept_points.count() >= 1
    x, y = hover_plotly_point(page, chart, kept_points.first)  # plotly clicks the point under the hover
    hover = chart.locator(".hoverlayer").text_content()
    assert ": kept; the circuit without it scores" in hover
    layer_head = hover.split(":")[0].strip()  # "L.H"
    page.mouse.click(x, y)
    page.get_by_text(f"Attention pattern of head {layer_head}", exact=False).wait_for(timeout=120_000)
    frame = page.frame_locator('[data-testid="stIFrame"], iframe').last
    frame.locator("canvas, svg").first.wait_for(timeout=60_000)
    page.set_viewport_size({"width": 1400, "height": 2400})
    next_frames(page)
    page.screenshot(path=str(ARTIFACTS / "circuit-page.png"))

    with page.expect_download(timeout=60_000) as download:
        page.get_by_role("button", name="Download circuit (JSON)").click()
    circuit = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    assert [int(v) for v in layer_head.split(".")] in circuit["heads"]
    with page.expect_download(timeout=60_000) as csv:
        page.get_by_role("button", name="Download table (CSV)").click()
    rows = Path(csv.value.path()).read_text(encoding="utf-8").splitlines()
    assert len(rows) == 2 + 30 * 10  # comment line, header, every head and every MLP

    # compare with an uploaded circuit: the found one without its first head
    other = {"heads": circuit["heads"][1:], "mlps": circuit["mlps"], "model": "uploaded <b>not bold</b>"}
    upload = tmp_path / "other.json"
    upload.write_text(json.dumps(other), encoding="utf-8")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').last.set_input_files(str(upload))
    page.get_by_text("Overlap of 2 circuits").wait_for(timeout=120_000)
    body = page.inner_text("body")
    assert "uploaded <b>not bold</b>" in body  # the label is shown as text, not as markup
    size = len(circuit["heads"]) + len(circuit["mlps"])
    expected = (size - 1) / size
    assert f"{expected:.3f}" in body  # Jaccard of the two
