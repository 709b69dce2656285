// The boxes over the image: an SVG whose viewBox is the image's own pixels, so a detection's corners
// (pixels of the full-resolution image) are drawn as they are, at whatever size the image is shown.

const SVG = "http://www.w3.org/2000/svg";

// Labels stay this many CSS pixels tall on screen, however much the image is scaled down.
const LABEL_PX = 12;

// Twenty vivid colours that stand out on photos, ordered so that neighbouring class ids differ most:
// COCO's first ten (person, bicycle, car, motorcycle, airplane, bus, train, truck, boat, traffic
// light) get ten different hues. A class's colour depends on its id alone: the same in every job.
const PALETTE = [
  "#ff3b30", "#00c7be", "#ffcc00", "#af52de", "#34c759", "#0a84ff", "#ff9500", "#ff2d92", "#64d2ff", "#a2845e",
  "#bf5af2", "#30b0c7", "#ff6961", "#5e5ce6", "#c7e600", "#ff8fab", "#00a86b", "#ffb340", "#7d7aff", "#e6007e",
];

export function classColour(classId) {
  const stroke = PALETTE[((classId % PALETTE.length) + PALETTE.length) % PALETTE.length];
  return { stroke, text: readableOn(stroke) };
}

// Black or white, whichever contrasts more with `hex` (WCAG relative luminance).
function readableOn(hex) {
  const channel = (i) => {
    const c = parseInt(hex.slice(1 + 2 * i, 3 + 2 * i), 16) / 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  };
  const luminance = 0.2126 * channel(0) + 0.7152 * channel(1) + 0.0722 * channel(2);
  return (luminance + 0.05) / 0.05 > 1.05 / (luminance + 0.05) ? "#111" : "#fff";
}

// Draws `detections` on `svg` for an image of `width` x `height` pixels shown `shownWidth` CSS
// pixels wide. Each box is a <g class="box"> with data-label, data-class-id and data-confidence.
export function drawBoxes(svg, detections, { width, height, shownWidth }) {
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const scale = shownWidth > 0 ? width / shownWidth : 1;
  const font = LABEL_PX * scale;
  const pad = 3 * scale;
  for (const d of detections) {
    const { x1, y1, x2, y2 } = d.box;
    const colour = classColour(d.class_id);
    const group = element("g", {
      class: "box",
      "data-label": d.label,
      "data-class-id": d.class_id,
      "data-confidence": d.confidence,
    });
    const title = element("title");
    title.textContent = `${d.label} ${(d.confidence * 100).toFixed(0)}%`;
    group.append(
      title,
      element("rect", {
        class: "box-frame",
        x: x1,
        y: y1,
        width: Math.max(0, x2 - x1),
        height: Math.max(0, y2 - y1),
        stroke: colour.stroke,
      }),
    );
    const text = `${d.label} ${d.confidence.toFixed(2)}`;
    const tagHeight = font + 2 * pad;
    // Above the box where there is room, else just inside its top edge.
    const top = y1 - tagHeight >= 0 ? y1 - tagHeight : y1;
    const label = element("text", { class: "box-label", y: top + pad + font * 0.82, "font-size": font, fill: colour.text });
    label.textContent = text;
    const tag = element("rect", { class: "box-tag", y: top, height: tagHeight, fill: colour.stroke });
    group.append(tag, label);
    svg.append(group);
    // The text's width is known once it is laid out (an estimate while the page is hidden); a tag
    // that would run off the right edge is moved left, so no label is cut.
    const measured = label.getComputedTextLength();
    const tagWidth = Math.min((measured > 0 ? measured : text.length * font * 0.6) + 2 * pad, width);
    const left = Math.max(0, Math.min(x1, width - tagWidth));
    tag.setAttribute("x", String(left));
    tag.setAttribute("width", String(tagWidth));
    label.setAttribute("x", String(left + pad));
  }
}

function element(name, attributes = {}) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  return node;
}
