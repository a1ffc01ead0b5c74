//! The markdown tables printed after a run.

use std::fmt::Write;

use serde_json::Value;

fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.fract() == 0.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.1}"),
        None => "-".into(),
    }
}

/// All tables of a run's results.
pub fn markdown(r: &Value) -> String {
    let mut out = String::new();
    let m = &r["machine"];
    let _ = writeln!(
        out,
        "Machine: {} x {}, kernel {}\n",
        m["cpus"],
        m["cpu"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?")
    );
    lifecycle(&mut out, r);
    batches(&mut out, r);
    exec_and_scale(&mut out, r);
    streaming(&mut out, r);
    pull(&mut out, r);
    out
}

fn lifecycle(out: &mut String, r: &Value) {
    let floor = r["floor"]["p50"].as_f64().unwrap_or(f64::NAN);
    let n = r["floor"]["n"].clone();
    let _ = writeln!(
        out,
        "| step (sequential, N={n}) | mean ms | p50 ms | p95 ms | p99 ms | p50 / crun floor |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    if let Some(steps) = r["lifecycle"].as_object() {
        for name in crate::measure::STEPS {
            let s = &steps[name];
            let ratio = s["p50"].as_f64().unwrap_or(f64::NAN) / floor;
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} | {ratio:.1}x |",
                num(&s["mean"]),
                num(&s["p50"]),
                num(&s["p95"]),
                num(&s["p99"])
            );
        }
    }
    let f = &r["floor"];
    let _ = writeln!(
        out,
        "| floor: bare `crun run` of the same container | {} | {} | {} | {} | 1.0x |\n",
        num(&f["mean"]),
        num(&f["p50"]),
        num(&f["p95"]),
        num(&f["p99"])
    );
}

fn batches(out: &mut String, r: &Value) {
    let _ = writeln!(
        out,
        "| pods started at once | p50 ms | p90 ms | p99 ms (time to running) |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for b in r["batches"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            b["size"],
            num(&b["p50"]),
            num(&b["p90"]),
            num(&b["p99"])
        );
    }
    out.push('\n');
}

fn exec_and_scale(out: &mut String, r: &Value) {
    let e = &r["execSync"];
    let s = &r["scale"];
    let _ = writeln!(out, "| figure | value |");
    let _ = writeln!(out, "|---|---|");
    let _ = writeln!(
        out,
        "| ExecSync `true` p50 / p99 (N={}) | {} / {} ms |",
        e["n"],
        num(&e["p50"]),
        num(&e["p99"])
    );
    let _ = writeln!(
        out,
        "| daemon RSS idle | {} KiB |",
        num(&s["daemonRssIdleKiB"])
    );
    let _ = writeln!(
        out,
        "| daemon RSS with {} running pods | {} KiB |",
        s["pods"],
        num(&s["daemonRssBusyKiB"])
    );
    let _ = writeln!(
        out,
        "| conmon monitors (PSS, all {}) | {} KiB |",
        s["monitors"],
        num(&s["monitorPssKiB"])
    );
    let _ = writeln!(
        out,
        "| per running pod (daemon growth + monitors) | {} KiB |",
        num(&s["perPodKiB"])
    );
    for (name, l) in s["lists"].as_object().into_iter().flatten() {
        let _ = writeln!(
            out,
            "| {name} with {} pods, p50 / p99 | {} / {} ms |",
            s["pods"],
            num(&l["p50"]),
            num(&l["p99"])
        );
    }
    out.push('\n');
}

fn pull(out: &mut String, r: &Value) {
    let p = &r["pull"];
    if p.is_null() {
        return;
    }
    let _ = writeln!(
        out,
        "| pull of {} ({} bytes), median of {} | seconds | MB/s |",
        p["image"].as_str().unwrap_or("?"),
        p["bytes"],
        p["ucriSeconds"]["n"]
    );
    let _ = writeln!(out, "|---|---|---|");
    let _ = writeln!(
        out,
        "| ucri (CRI PullImage, cold store) | {:.2} | {} |",
        p["ucriSeconds"]["p50"].as_f64().unwrap_or(0.0) / 1000.0,
        num(&p["ucriMBps"])
    );
    let _ = writeln!(
        out,
        "| skopeo copy to an OCI dir (reference) | {:.2} | {} |",
        p["skopeoSeconds"]["p50"].as_f64().unwrap_or(0.0) / 1000.0,
        num(&p["skopeoMBps"])
    );
    let _ = writeln!(out, "| ratio ucri / skopeo | | {} |", num(&p["ratio"]));
}

fn streaming(out: &mut String, r: &Value) {
    let s = &r["streaming"];
    if s.is_null() {
        return;
    }
    let _ = writeln!(out, "| streaming figure | value |");
    let _ = writeln!(out, "|---|---|");
    for (name, key) in [
        ("Exec + SPDY/3.1 `true`, exit status", "execSpdy"),
        ("Exec + WebSocket v5 `true`, exit status", "execWebSocket"),
        ("ExecSync `true` (same run)", "execSync"),
    ] {
        let _ = writeln!(
            out,
            "| {name}: p50 / p99 (N={}) | {} / {} ms |",
            s[key]["n"],
            num(&s[key]["p50"]),
            num(&s[key]["p99"])
        );
    }
    for (name, key) in [
        ("port-forward download, SPDY", "portForwardSpdyGbps"),
        (
            "port-forward download, WebSocket",
            "portForwardWebSocketGbps",
        ),
        ("hostPort forwarder download (reference)", "hostPortGbps"),
    ] {
        let _ = writeln!(
            out,
            "| {name} ({} MiB, median of {}) | {} Gbit/s |",
            s["transferMiB"],
            s["rounds"],
            num(&s[key])
        );
    }
    out.push('\n');
}
