//! `ucri ctl` commands that watch: `logs` (with `-f`, `--tail`, `-t`),
//! `stats`, `statsp` and `events`, in crictl's shapes.

use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

use anyhow::Context;
use tonic::transport::Channel;
use ucri_cri_api::v1::runtime_service_client::RuntimeServiceClient;
use ucri_cri_api::v1::*;

use super::output::{print_structured, Output};

type Client = RuntimeServiceClient<Channel>;

/// One CRI log line split into its parts.
struct LogLine<'a> {
    time: &'a str,
    stream: &'a str,
    partial: bool,
    content: &'a str,
}

fn parse_log_line(line: &str) -> Option<LogLine<'_>> {
    let mut parts = line.splitn(4, ' ');
    Some(LogLine {
        time: parts.next()?,
        stream: parts.next()?,
        partial: parts.next()? == "P",
        content: parts.next().unwrap_or(""),
    })
}

fn print_log_line(line: &str, timestamps: bool) {
    let Some(l) = parse_log_line(line) else {
        return;
    };
    let end = if l.partial { "" } else { "\n" };
    let prefix = if timestamps {
        format!("{} ", l.time)
    } else {
        String::new()
    };
    if l.stream == "stderr" {
        eprint!("{prefix}{}{end}", l.content);
    } else {
        print!("{prefix}{}{end}", l.content);
    }
}

/// `ucri ctl logs [-f] [--tail N] [-t] ID`.
pub async fn logs(
    client: &mut Client,
    id: String,
    follow: bool,
    tail: i64,
    timestamps: bool,
) -> anyhow::Result<()> {
    let status = container_status(client, &id).await?;
    let path = std::path::PathBuf::from(&status.log_path);
    let mut file =
        std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let lines: Vec<&str> = text.lines().collect();
    let skip = if tail >= 0 {
        lines.len().saturating_sub(tail as usize)
    } else {
        0
    };
    for line in &lines[skip..] {
        print_log_line(line, timestamps);
    }
    if !follow {
        return Ok(());
    }
    let mut offset = text.len() as u64;
    let mut pending = String::new();
    loop {
        let exited =
            container_status(client, &id).await?.state == ContainerState::ContainerExited as i32;
        // kubelet's rotation renames the file and conmon reopens a new one.
        let rotated = std::fs::metadata(&path)
            .map(|m| m.len() < offset)
            .unwrap_or(false);
        if rotated {
            file = std::fs::File::open(&path)?;
            offset = 0;
        }
        file.seek(SeekFrom::Start(offset))?;
        let mut chunk = String::new();
        offset += file.read_to_string(&mut chunk)? as u64;
        pending.push_str(&chunk);
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            print_log_line(line.trim_end_matches('\n'), timestamps);
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        if exited {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn container_status(client: &mut Client, id: &str) -> anyhow::Result<ContainerStatus> {
    client
        .container_status(ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .context("no status")
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{n}B");
    }
    let number = format!("{v:.3}");
    let number = number.trim_end_matches('0').trim_end_matches('.');
    format!("{number}{}", UNITS[unit])
}

fn value(v: Option<&UInt64Value>) -> u64 {
    v.map_or(0, |v| v.value)
}

/// `ucri ctl stats [ID]`: CPU % (from two samples), memory, writable layer.
pub async fn stats(client: &mut Client, id: Option<String>, output: Output) -> anyhow::Result<()> {
    let filter = Some(ContainerStatsFilter {
        id: id.unwrap_or_default(),
        ..Default::default()
    });
    let sample = |client: &mut Client| {
        let mut client = client.clone();
        let filter = filter.clone();
        async move {
            anyhow::Ok(
                client
                    .list_container_stats(ListContainerStatsRequest { filter })
                    .await?
                    .into_inner(),
            )
        }
    };
    let _ = sample(client).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reply = sample(client).await?;
    if output != Output::Table {
        return print_structured(&serde_json::to_value(&reply)?, output);
    }
    println!(
        "{:<15}{:<20}{:<10}{:<12}{:<12}{:<8}",
        "CONTAINER", "NAME", "CPU %", "MEM", "DISK", "INODES"
    );
    for s in reply.stats {
        let a = s.attributes.unwrap_or_default();
        let cpu = value(s.cpu.as_ref().and_then(|c| c.usage_nano_cores.as_ref())) as f64 / 1e7;
        let mem = value(s.memory.as_ref().and_then(|m| m.working_set_bytes.as_ref()));
        let disk = s.writable_layer.unwrap_or_default();
        println!(
            "{:<15}{:<20}{:<10.2}{:<12}{:<12}{:<8}",
            &a.id[..a.id.len().min(13)],
            a.metadata.map(|m| m.name).unwrap_or_default(),
            cpu,
            human_bytes(mem),
            human_bytes(value(disk.used_bytes.as_ref())),
            value(disk.inodes_used.as_ref())
        );
    }
    Ok(())
}

/// `ucri ctl statsp [ID]`: per pod CPU, memory and network.
pub async fn statsp(client: &mut Client, id: Option<String>, output: Output) -> anyhow::Result<()> {
    let reply = client
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest {
            filter: Some(PodSandboxStatsFilter {
                id: id.unwrap_or_default(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner();
    if output != Output::Table {
        return print_structured(&serde_json::to_value(&reply)?, output);
    }
    println!(
        "{:<15}{:<20}{:<12}{:<10}{:<12}{:<12}",
        "POD", "NAME", "MEM", "PROCS", "RX", "TX"
    );
    for s in reply.stats {
        let a = s.attributes.unwrap_or_default();
        let linux = s.linux.unwrap_or_default();
        let net = linux
            .network
            .and_then(|n| n.default_interface)
            .unwrap_or_default();
        println!(
            "{:<15}{:<20}{:<12}{:<10}{:<12}{:<12}",
            &a.id[..a.id.len().min(13)],
            a.metadata.map(|m| m.name).unwrap_or_default(),
            human_bytes(value(
                linux
                    .memory
                    .as_ref()
                    .and_then(|m| m.working_set_bytes.as_ref())
            )),
            value(
                linux
                    .process
                    .as_ref()
                    .and_then(|p| p.process_count.as_ref())
            ),
            human_bytes(value(net.rx_bytes.as_ref())),
            human_bytes(value(net.tx_bytes.as_ref()))
        );
    }
    Ok(())
}

/// `ucri ctl events`: container and pod events as they happen, until the
/// daemon goes away or the user interrupts.
pub async fn events(client: &mut Client, output: Output) -> anyhow::Result<()> {
    let mut stream = client
        .get_container_events(GetEventsRequest {})
        .await?
        .into_inner();
    while let Some(event) = stream.message().await? {
        match output {
            Output::Json => {
                println!("{}", serde_json::to_string(&event)?);
                continue;
            }
            Output::Yaml => {
                print!("---\n{}", yaml_serde::to_string(&event)?);
                continue;
            }
            Output::Table => {}
        }
        let kind = ContainerEventType::try_from(event.container_event_type)
            .map(|k| k.as_str_name().to_owned())
            .unwrap_or_else(|_| event.container_event_type.to_string());
        let pod = event
            .pod_sandbox_status
            .and_then(|p| p.metadata)
            .map(|m| format!("{}/{}", m.namespace, m.name))
            .unwrap_or_default();
        println!("{} {kind} {} {pod}", event.created_at, event.container_id);
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_and_sizes_read_like_crictls() {
        let l = parse_log_line("2026-11-25T10:00:00.1Z stdout P part one").expect("line");
        assert_eq!(
            (l.stream, l.partial, l.content),
            ("stdout", true, "part one")
        );
        let l = parse_log_line("2026-11-25T10:00:00.1Z stderr F ").expect("empty line");
        assert_eq!((l.partial, l.content), (false, ""));
        assert_eq!(human_bytes(999), "999B");
        assert_eq!(human_bytes(1_500_000), "1.5MB");
        assert_eq!(human_bytes(2_000), "2kB");
    }
}
