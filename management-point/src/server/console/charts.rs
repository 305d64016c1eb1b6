//! The console's charts, drawn on the server as SVG (no scripts, the CSP stays strict): an
//! advertisement's or a rollout group's progress over time, and a group's devices as a bar.

/// A plot of an advertisement's progress, drawn on the server: the devices targeted (a dashed
/// line), and those that succeeded and failed by each moment, from its start until `now`.
pub fn plot(start: i64, now: i64, targeted: usize, points: &[(i64, usize, usize)]) -> String {
    let (w, h, pad) = (600.0_f64, 200.0_f64, 30.0_f64);
    let span = (now - start).max(1) as f64;
    let top = targeted.max(1) as f64;
    let x = |t: i64| pad + (w - 2.0 * pad) * ((t - start).max(0) as f64 / span).min(1.0);
    let y = |n: usize| h - pad - (h - 2.0 * pad) * (n as f64 / top);
    let line = |pick: &dyn Fn(&(i64, usize, usize)) -> usize| {
        let mut pts = vec![format!("{:.1},{:.1}", x(start), y(0))];
        let mut last = 0;
        for p in points {
            pts.push(format!("{:.1},{:.1}", x(p.0), y(last)));
            last = pick(p);
            pts.push(format!("{:.1},{:.1}", x(p.0), y(last)));
        }
        pts.push(format!("{:.1},{:.1}", x(now), y(last)));
        pts.join(" ")
    };
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\" \
         aria-label=\"progress over time\"><rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"white\"/>\
         <line x1=\"{pad}\" y1=\"{ty:.1}\" x2=\"{x2}\" y2=\"{ty:.1}\" stroke=\"gray\" stroke-dasharray=\"4\"/>\
         <polyline fill=\"none\" stroke=\"green\" stroke-width=\"2\" points=\"{ok}\"/>\
         <polyline fill=\"none\" stroke=\"red\" stroke-width=\"2\" points=\"{bad}\"/>\
         <text x=\"{pad}\" y=\"15\" font-size=\"12\">targeted {targeted} · succeeded (green) · failed (red)</text></svg>",
        ty = y(targeted),
        x2 = w - pad,
        ok = line(&|p| p.1),
        bad = line(&|p| p.2),
    )
}

/// One group's bar: confirmed, soaking, installing and failed devices, to scale.
pub fn bar(c: &crate::rollout::Counts) -> String {
    let (w, h) = (400.0, 18.0);
    let total = c.size.max(1) as f64;
    let mut x = 0.0;
    let mut svg = format!(
        "<svg width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{} confirmed, {} soaking, {} installing, {} failed of {}\">",
        c.succeeded, c.soaking, c.installing, c.failed, c.size
    );
    for (n, color) in [
        (c.succeeded, "#2e7d32"),
        (c.soaking, "#1565c0"),
        (c.installing, "#bdbdbd"),
        (c.failed, "#c62828"),
    ] {
        let width = w * n as f64 / total;
        if n > 0 {
            svg.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"0\" width=\"{width:.1}\" height=\"{h}\" fill=\"{color}\"/>"
            ));
        }
        x += width;
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_steps_up_with_each_device_that_finished() {
        let svg = plot(0, 100, 4, &[(50, 1, 0), (75, 1, 1)]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
        // 600 wide, 30 padding: t=50 is x=300; 1 of 4 devices is y=170-35=135.
        assert!(svg.contains("300.0,170.0 300.0,135.0"), "{svg}");
        assert!(svg.contains("targeted 4"), "{svg}");
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        let empty = plot(10, 10, 0, &[]);
        assert!(!empty.contains("NaN") && !empty.contains("inf"), "{empty}");
    }
}

/// A horizontal bar chart of counts, each bar a link to what it counts when `href` is given:
/// `(label, count, href)`. Drawn to the largest count.
pub fn bars(items: &[(String, u64, Option<String>)]) -> String {
    let (w, row, label_w) = (560.0_f64, 26.0_f64, 210.0_f64);
    let h = row * items.len().max(1) as f64 + 4.0;
    let top = items.iter().map(|i| i.1).max().unwrap_or(0).max(1) as f64;
    let total: u64 = items.iter().map(|i| i.1).sum();
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{total} in all\">"
    );
    if items.is_empty() {
        svg.push_str(
            "<text x=\"0\" y=\"18\" font-size=\"13\" fill=\"#666\">nothing reported yet</text>",
        );
    }
    for (i, (label, n, href)) in items.iter().enumerate() {
        let y = i as f64 * row + 2.0;
        let bw = ((w - label_w - 60.0) * (*n as f64) / top).max(if *n > 0 { 2.0 } else { 0.0 });
        let bar = format!(
            "<text x=\"0\" y=\"{ty:.1}\" font-size=\"13\">{l}</text>\
             <rect x=\"{label_w}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{bh:.1}\" rx=\"3\" fill=\"{color}\"/>\
             <text x=\"{tx:.1}\" y=\"{ty:.1}\" font-size=\"13\">{n}</text>",
            ty = y + 16.0,
            l = super::esc(label),
            bh = row - 8.0,
            color = color_of(label),
            tx = label_w + bw + 6.0,
        );
        match href {
            Some(href) => svg.push_str(&format!("<a href=\"{}\">{bar}</a>", super::esc(href))),
            None => svg.push_str(&bar),
        }
    }
    svg.push_str("</svg>");
    svg
}

/// A bar's color by what its label says: well, in progress, or not.
fn color_of(label: &str) -> &'static str {
    let l = label.to_lowercase();
    if l.starts_with("unhealthy") || l.contains("fail") || l.contains("non-compliant") {
        "#c62828"
    } else if l.contains("progress") || l.contains("pending") || l.contains("available") {
        "#1565c0"
    } else if l.contains("unknown") || l == "?" {
        "#9e9e9e"
    } else {
        "#2e7d32"
    }
}

#[cfg(test)]
mod bar_tests {
    use super::*;

    #[test]
    fn bars_link_to_what_they_count_and_escape_labels() {
        let svg = bars(&[
            ("healthy".into(), 8, Some("/console/reports/healthy".into())),
            ("<b>".into(), 2, None),
        ]);
        assert!(svg.contains("<a href=\"/console/reports/healthy\">"), "{svg}");
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"), "{svg}");
        assert!(svg.contains("aria-label=\"10 in all\""));
        assert!(bars(&[]).contains("nothing reported yet"));
    }
}
