//! The report as one self-contained HTML page: inline CSS, inline SVG
//! charts (key ages against the 90-day line; sagas per week by outcome),
//! no script, no external asset, so it opens the same from a mail
//! attachment, an S3 object or a file share. Every text that came from AWS
//! or the table is HTML-escaped.

use std::fmt::Write as _;

use super::model::{age_buckets, Report, Week, IAM3_DAYS};

/// HTML-escape text (element content and attribute values).
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = r#"
:root{--ink:#1d2330;--mute:#5b6475;--line:#e3e6ec;--bg:#f6f7f9;--ok:#2e8b57;--bad:#c0392b;--warn:#d68910;--info:#2f6fdf;--grey:#9aa3b2}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);background:var(--bg)}
header{background:#1d2330;color:#fff;padding:24px 32px}header h1{margin:0 0 4px;font-size:22px}header p{margin:0;color:#c9cfdb}
main{max-width:1200px;margin:0 auto;padding:24px 32px}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:18px 22px;margin:0 0 20px}
h2{font-size:17px;margin:0 0 12px}h3{font-size:14px;margin:14px 0 6px;color:var(--mute)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;margin:0 0 20px}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:14px 16px}
.card b{display:block;font-size:26px}.card span{color:var(--mute);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card.bad b{color:var(--bad)}.card.warn b{color:var(--warn)}.card.ok b{color:var(--ok)}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:#fafbfc;color:var(--mute);font-weight:600}tr.flag td{background:#fff6f5}
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}pre{background:#f3f4f7;padding:8px 10px;border-radius:6px;margin:4px 0 0;white-space:pre-wrap}
.pill{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;background:#eef1f6;color:var(--mute)}
.pill.high,.pill.failed{background:#fdecea;color:var(--bad)}.pill.medium,.pill.needs_attention{background:#fef5e7;color:var(--warn)}.pill.succeeded,.pill.covered{background:#eaf6ee;color:var(--ok)}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:20px}
svg text{font:11px system-ui,sans-serif;fill:#5b6475}.muted{color:var(--mute)}footer{color:var(--mute);font-size:12px;padding:0 32px 32px;max-width:1200px;margin:0 auto}
"#;

fn pill(class: &str, text: &str) -> String {
    format!("<span class=\"pill {}\">{}</span>", esc(class), esc(text))
}

fn opt(v: &Option<String>) -> String {
    v.as_deref().map(esc).unwrap_or_else(|| "<span class=\"muted\">—</span>".into())
}

/// Key ages in 15-day bins, active stacked on inactive, with the 90-day line.
pub fn age_chart(r: &Report) -> String {
    let bins = age_buckets(&r.keys);
    let (w, h, left, bottom, top) = (600.0, 260.0, 40.0, 40.0, 24.0);
    let bw = (w - left - 10.0) / bins.len() as f64;
    let max = bins.iter().map(|b| b.1 + b.2).max().unwrap_or(0).max(1) as f64;
    let y = |v: f64| h - bottom - v / max * (h - bottom - top);
    let mut s = format!(
        "<svg id=\"chart-key-age\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"100%\" role=\"img\" aria-labelledby=\"chart-key-age-title\">\
         <title id=\"chart-key-age-title\">Access key age distribution against the {IAM3_DAYS}-day line</title>"
    );
    let _ = write!(s, "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#c9ced8\"/>", h - bottom, w - 10.0, h - bottom);
    let _ = write!(s, "<text x=\"4\" y=\"{}\">{}</text><text x=\"4\" y=\"{}\">0</text>", top + 4.0, max as u64, h - bottom);
    for (i, (label, active, inactive)) in bins.iter().enumerate() {
        let x = left + i as f64 * bw + 3.0;
        let past = i >= (IAM3_DAYS / 15) as usize;
        let fill = if past { "#c0392b" } else { "#2f6fdf" };
        let ya = y((*active + *inactive) as f64);
        let yi = y(*inactive as f64);
        if *inactive > 0 {
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{yi:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#9aa3b2\"><title>{label} days: {inactive} inactive</title></rect>",
                bw - 6.0,
                h - bottom - yi
            );
        }
        if *active > 0 {
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{ya:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\"><title>{label} days: {active} active</title></rect>",
                bw - 6.0,
                yi - ya
            );
        }
        if active + inactive > 0 {
            let _ = write!(s, "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>", x + (bw - 6.0) / 2.0, ya - 4.0, active + inactive);
        }
        let _ = write!(s, "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>", x + (bw - 6.0) / 2.0, h - bottom + 14.0);
    }
    let line_x = left + (IAM3_DAYS as f64 / 15.0) * bw;
    let _ = write!(
        s,
        "<line x1=\"{line_x:.1}\" y1=\"{top}\" x2=\"{line_x:.1}\" y2=\"{}\" stroke=\"#c0392b\" stroke-width=\"2\" stroke-dasharray=\"5 4\"/>\
         <text x=\"{:.1}\" y=\"{}\" fill=\"#c0392b\" style=\"fill:#c0392b\">IAM.3: {IAM3_DAYS} days</text>\
         <text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">key age (days)</text></svg>",
        h - bottom,
        line_x + 4.0,
        top - 8.0,
        left + (w - left) / 2.0,
        h - 6.0
    );
    s
}

/// Sagas started per week, stacked by outcome.
pub fn weeks_chart(weeks: &[Week]) -> String {
    let (w, h, left, bottom, top) = (600.0, 260.0, 40.0, 40.0, 24.0);
    let n = weeks.len().max(1);
    let bw = (w - left - 10.0) / n as f64;
    let total = |wk: &Week| wk.succeeded + wk.failed + wk.needs_attention + wk.other;
    let max = weeks.iter().map(total).max().unwrap_or(0).max(1) as f64;
    let scale = |v: u64| v as f64 / max * (h - bottom - top);
    let mut s = format!(
        "<svg id=\"chart-rotations-per-week\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"100%\" role=\"img\" aria-labelledby=\"chart-weeks-title\">\
         <title id=\"chart-weeks-title\">Rotations per week by outcome</title>"
    );
    let _ = write!(s, "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#c9ced8\"/>", h - bottom, w - 10.0, h - bottom);
    let _ = write!(s, "<text x=\"4\" y=\"{}\">{}</text><text x=\"4\" y=\"{}\">0</text>", top + 4.0, max as u64, h - bottom);
    let every = n.div_ceil(7);
    for (i, wk) in weeks.iter().enumerate() {
        let x = left + i as f64 * bw + 2.0;
        let mut base = h - bottom;
        for (v, color, name) in [
            (wk.succeeded, "#2e8b57", "succeeded"),
            (wk.failed, "#c0392b", "failed"),
            (wk.needs_attention, "#d68910", "needs attention"),
            (wk.other, "#9aa3b2", "other"),
        ] {
            if v == 0 {
                continue;
            }
            let hh = scale(v);
            base -= hh;
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{base:.1}\" width=\"{:.1}\" height=\"{hh:.1}\" fill=\"{color}\"><title>week of {}: {v} {name}</title></rect>",
                (bw - 4.0).max(1.0),
                esc(&wk.starts[..10.min(wk.starts.len())])
            );
        }
        if i % every == 0 {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x + bw / 2.0,
                h - bottom + 14.0,
                esc(wk.starts.get(5..10).unwrap_or(""))
            );
        }
    }
    let mut lx = left;
    for (color, name) in [("#2e8b57", "succeeded"), ("#c0392b", "failed"), ("#d68910", "needs attention"), ("#9aa3b2", "other")] {
        let _ = write!(s, "<rect x=\"{lx}\" y=\"4\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"13\">{name}</text>", lx + 14.0);
        lx += 110.0;
    }
    let _ = write!(s, "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">week starting (MM-DD)</text></svg>", left + (w - left) / 2.0, h - 6.0);
    s
}

pub fn render(r: &Report) -> String {
    let mut s = String::with_capacity(64 * 1024 + r.keys.len() * 400);
    head(&mut s, r);
    findings(&mut s, r);
    charts(&mut s, r);
    rotations(&mut s, r);
    keys(&mut s, r);
    history(&mut s, r);
    evidence(&mut s, r);
    s
}

/// The title, the summary cards and the accounts that could not be read.
fn head(s: &mut String, r: &Report) {
    let past = r.keys.iter().filter(|k| k.past_90_days).count();
    let uncovered = r.keys.iter().filter(|k| k.rotation_id.is_none() && k.status == "Active").count();
    let unused = r.keys.iter().filter(|k| k.unused_90_days).count();
    let count = |o: &str| r.history.by_outcome.get(o).copied().unwrap_or(0);
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>keyturn report — access keys as of {as_of}</title><style>{STYLE}</style></head><body>\
         <header><h1>Access keys and rotations</h1><p>As of {as_of} · history since {since} · {n} account(s): {accts}</p></header><main>",
        as_of = esc(&r.as_of),
        since = esc(&r.since),
        n = r.accounts.len(),
        accts = esc(&r.accounts.iter().map(|a| a.account_id.as_str()).collect::<Vec<_>>().join(", ")),
    );
    let card = |class: &str, n: usize, label: &str| format!("<div class=\"card {class}\"><b>{n}</b><span>{}</span></div>", esc(label));
    s.push_str("<div class=\"cards\">");
    s.push_str(&card("", r.keys.len(), "access keys"));
    s.push_str(&card(if past > 0 { "bad" } else { "ok" }, past, "past 90 days"));
    s.push_str(&card(if uncovered > 0 { "warn" } else { "ok" }, uncovered, "active keys nothing rotates"));
    s.push_str(&card(if unused > 0 { "warn" } else { "ok" }, unused, "unused for 90 days"));
    s.push_str(&card("ok", count("succeeded") as usize, "rotations succeeded"));
    s.push_str(&card(if count("failed") > 0 { "bad" } else { "" }, count("failed") as usize, "failed"));
    s.push_str(&card(if count("needs_attention") > 0 { "warn" } else { "" }, count("needs_attention") as usize, "needed attention"));
    s.push_str(&card("", r.history.exposures_handled as usize, "exposed keys handled"));
    s.push_str("</div>");

    for a in r.accounts.iter().filter(|a| a.error.is_some()) {
        let _ = write!(s, "<section><h2>Account {} was not fully read</h2><p>{}</p></section>", esc(&a.account_id), esc(a.error.as_deref().unwrap_or("")));
    }
}

/// The findings, each with its fix.
fn findings(s: &mut String, r: &Report) {
    let _ = write!(s, "<section id=\"findings\"><h2>Findings ({})</h2>", r.findings.len());
    if r.findings.is_empty() {
        s.push_str("<p>Nothing to fix.</p>");
    } else {
        s.push_str("<table><tr><th>severity</th><th>finding</th><th>about</th><th>what happened and how to fix it</th></tr>");
        for f in &r.findings {
            let _ = write!(
                s,
                "<tr><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}<pre>{}</pre></td></tr>",
                pill(f.severity, f.severity),
                esc(f.kind),
                esc(&f.subject),
                esc(&f.message),
                esc(&f.fix)
            );
        }
        s.push_str("</table>");
    }
    s.push_str("</section>");
}

/// The two charts: key ages against the 90-day line, rotations per week.
fn charts(s: &mut String, r: &Report) {
    let _ = write!(
        s,
        "<section><div class=\"charts\"><div><h2>Key ages</h2>{}</div><div><h2>Rotations per week</h2>{}</div></div>\
         <p class=\"muted\">Median time from start to the target holding the new key: {}; to the end, grace period included: {}.</p></section>",
        age_chart(r),
        weeks_chart(&r.history.weeks),
        r.history.median_time_to_switch_s.map(|t| format!("{t} s")).unwrap_or_else(|| "—".into()),
        r.history.median_time_to_rotate_s.map(|t| format!("{t} s")).unwrap_or_else(|| "—".into()),
    );
}

/// One row per configured rotation.
fn rotations(s: &mut String, r: &Report) {
    s.push_str("<section id=\"rotations\"><h2>Rotations</h2><table><tr><th>rotation</th><th>credential</th><th>target</th><th>last success</th><th>next due</th><th>open saga</th><th>failures / quarantine</th><th>recorded credential</th></tr>");
    for ro in &r.rotations {
        let open = ro.open_saga.as_ref().map(|o| format!("<code>{}</code><br>{} at {}", esc(&o.saga_id), pill(&o.status, &o.status), esc(&o.step)));
        let q = match &ro.quarantine {
            Some(q) => format!(
                "{} in a row; {} since {} ({}), next attempt {}",
                ro.consecutive_failures,
                pill("failed", if q.disabled { "disabled" } else { "quarantined" }),
                esc(&q.since),
                esc(&q.reason),
                esc(&q.next_attempt)
            ),
            None => ro.consecutive_failures.to_string(),
        };
        let recorded = ro.scim_token.as_ref().map(|t| format!("created {}<br>expires {}", esc(&t.created_at), esc(&t.expires_at)));
        let _ = write!(
            s,
            "<tr><td><b>{}</b></td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}<br><span class=\"muted\">{}</span></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&ro.rotation_id),
            esc(&ro.source),
            esc(&ro.target),
            opt(&ro.last_success),
            opt(&ro.next_due),
            esc(&ro.next_due_reason),
            open.unwrap_or_else(|| "<span class=\"muted\">none</span>".into()),
            q,
            recorded.unwrap_or_else(|| "<span class=\"muted\">—</span>".into())
        );
    }
    s.push_str("</table></section>");
}

/// One row per access key.
fn keys(s: &mut String, r: &Report) {
    let _ = write!(s, "<section id=\"keys\"><h2>Access keys ({})</h2><table><tr><th>account</th><th>user</th><th>key</th><th>status</th><th>created</th><th>age (days)</th><th>last used</th><th>service / region</th><th>rotated by</th></tr>", r.keys.len());
    for k in &r.keys {
        let flag = if k.past_90_days || (k.rotation_id.is_none() && k.status == "Active") || k.unused_90_days { " class=\"flag\"" } else { "" };
        let _ = write!(
            s,
            "<tr{flag}><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td><td>{} / {}</td><td>{}</td></tr>",
            esc(&k.account_id),
            esc(&k.user_name),
            esc(&k.access_key_id),
            esc(&k.status),
            esc(&k.created_at),
            k.age_days,
            if k.past_90_days { format!(" {}", pill("high", "past 90 days")) } else { String::new() },
            match &k.last_used_at {
                Some(t) => esc(t),
                None => "never".into(),
            },
            esc(&k.last_used_service),
            esc(&k.last_used_region),
            match &k.rotation_id {
                Some(id) => pill("covered", id),
                None => pill("medium", "nothing"),
            }
        );
    }
    s.push_str("</table></section>");
}

/// The sagas of the period.
fn history(s: &mut String, r: &Report) {
    let _ = write!(
        s,
        "<section id=\"history\"><h2>History ({} sagas since {})</h2><p>{}</p><table><tr><th>started</th><th>rotation</th><th>outcome</th><th>trigger</th><th>requested by</th><th>time to switch / rotate</th><th>saga</th><th>failure</th></tr>",
        r.history.sagas.len(),
        esc(&r.since),
        r.history.by_outcome.iter().map(|(k, v)| format!("{} {v}", pill(k, k))).collect::<Vec<_>>().join(" ")
    );
    for h in &r.history.sagas {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}<br><span class=\"muted\">{}</span></td><td>{}</td><td>{} / {}</td><td><code>{}</code>{}</td><td>{}</td></tr>",
            esc(&h.started_at),
            esc(&h.rotation_id),
            pill(&h.outcome, &h.status),
            esc(&h.trigger),
            esc(&h.trigger_detail),
            opt(&h.requested_by),
            h.time_to_switch_s.map(|t| format!("{t} s")).unwrap_or_else(|| "—".into()),
            h.time_to_rotate_s.map(|t| format!("{t} s")).unwrap_or_else(|| "—".into()),
            esc(&h.saga_id),
            h.exposed_key.as_ref().map(|k| format!("<br>exposed key <code>{}</code>", esc(k))).unwrap_or_default(),
            opt(&h.failure)
        );
    }
    s.push_str("</table></section>");
}

/// The controls this report is evidence for, and the footer.
fn evidence(s: &mut String, r: &Report) {
    s.push_str("<section id=\"evidence\"><h2>Evidence: controls this report supports</h2><table><tr><th>standard</th><th>control</th><th>requirement</th><th>where in this report</th></tr>");
    for st in &r.standards {
        let _ = write!(
            s,
            "<tr><td>{}</td><td><b>{}</b></td><td>{}</td><td>{}</td></tr>",
            esc(st.standard),
            esc(st.control),
            esc(st.requirement),
            esc(st.evidence)
        );
    }
    s.push_str("</table></section></main>");
    let _ = write!(
        s,
        "<footer>Generated by keyturn report ({}) from IAM (ListUsers, ListAccessKeys, GetAccessKeyLastUsed) in each account and keyturn's saga table. \
         Ages are counted to the as-of instant; a key is past the line when it is active and older than {IAM3_DAYS} days.</footer></body></html>",
        esc(&r.as_of)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_data_is_escaped() {
        assert_eq!(esc("<script>alert('x')</script>&\""), "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;");
    }
}
