//! Container and pod stats without delegated cgroups: read from /proc of
//! each container's process tree (its init and every descendant), the
//! writable layer's disk usage, and the pod network namespace's
//! `/proc/net/dev`. So stats are never empty on a host that gives the user
//! no cgroups (processes started by ExecSync are not in the tree).

use std::collections::HashMap;

use ucri_cri_api::v1::{
    ContainerAttributes, ContainerStats, ContainerStatsFilter, CpuUsage, FilesystemIdentifier,
    FilesystemUsage, LinuxPodSandboxStats, MemoryUsage, NetworkInterfaceUsage, NetworkUsage,
    PodSandboxAttributes, PodSandboxStats, PodSandboxStatsFilter, ProcessUsage, UInt64Value,
};

use super::sandbox::PodDir;
use super::state::{ContainerPhase, ContainerState, PodPhase, PodState};
use super::{now_nanos, Lifecycle, LifecycleError};

/// One process, from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Proc {
    ppid: i32,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    /// cutime + cstime: children it has reaped.
    reaped_ticks: u64,
    rss_pages: u64,
    minor_faults: u64,
    major_faults: u64,
}

/// Parses the fields of `/proc/PID/stat` that stats need.
fn parse_stat(text: &str) -> Option<Proc> {
    let rest = text.get(text.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); field N is f[N - 3].
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Proc {
        ppid: f.get(1)?.parse().ok()?,
        cpu_ticks: num(14)? + num(15)?,
        reaped_ticks: num(16)? + num(17)?,
        rss_pages: num(24)?,
        minor_faults: num(10)?,
        major_faults: num(12)?,
    })
}

/// Every process on the host this daemon can see.
fn process_table() -> HashMap<i32, Proc> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parse_stat(&text)?))
        })
        .collect()
}

/// Totals over `root` and its descendants.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct TreeUsage {
    cpu_ns: u64,
    rss_bytes: u64,
    /// From a cgroup: usage minus inactive file pages (0 = use RSS).
    working_set_bytes: u64,
    /// From a cgroup: all memory charged (0 = use RSS).
    usage_bytes: u64,
    minor_faults: u64,
    major_faults: u64,
    processes: u64,
}

fn tree_usage(table: &HashMap<i32, Proc>, root: i32, tick_ns: u64, page: u64) -> TreeUsage {
    let mut usage = TreeUsage::default();
    let Some(init) = table.get(&root) else {
        return usage;
    };
    usage.cpu_ns += init.reaped_ticks * tick_ns;
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        let Some(p) = table.get(&pid) else { continue };
        usage.cpu_ns += p.cpu_ticks * tick_ns;
        usage.rss_bytes += p.rss_pages * page;
        usage.minor_faults += p.minor_faults;
        usage.major_faults += p.major_faults;
        usage.processes += 1;
        stack.extend(
            table
                .iter()
                .filter(|(_, c)| c.ppid == pid)
                .map(|(child, _)| *child),
        );
    }
    usage
}

fn clock() -> (u64, u64) {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as u64;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .filter(|p| *p > 0)
        .unwrap_or(4096) as u64;
    (1_000_000_000 / ticks, page)
}

fn value(v: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value: v })
}

/// Interfaces of a `/proc/net/dev` text, loopback left out.
fn parse_net_dev(text: &str) -> Vec<NetworkInterfaceUsage> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            (f.len() >= 11 && name.trim() != "lo").then(|| NetworkInterfaceUsage {
                name: name.trim().to_owned(),
                rx_bytes: value(f[0]),
                rx_errors: value(f[2]),
                tx_bytes: value(f[8]),
                tx_errors: value(f[10]),
            })
        })
        .collect()
}

impl Lifecycle {
    /// Stats of one container.
    pub fn container_stats(&self, id: &str) -> Result<ContainerStats, LifecycleError> {
        let state = self.container(id)?;
        let (tick, page) = clock();
        Ok(self.stats_of(&state, &process_table(), tick, page))
    }

    /// Stats of the containers matching `filter`.
    pub fn list_container_stats(
        &self,
        filter: Option<ContainerStatsFilter>,
    ) -> Vec<ContainerStats> {
        let table = process_table();
        let (tick, page) = clock();
        self.containers_snapshot()
            .iter()
            .filter(|c| filter.as_ref().is_none_or(|f| stats_filter_matches(c, f)))
            .map(|c| self.stats_of(c, &table, tick, page))
            .collect()
    }

    fn containers_snapshot(&self) -> Vec<ContainerState> {
        let ids = self.container_ids();
        ids.iter()
            .filter_map(|id| self.refresh(id))
            .filter(|c| c.created_at != 0)
            .collect()
    }

    fn stats_of(
        &self,
        c: &ContainerState,
        table: &HashMap<i32, Proc>,
        tick: u64,
        page: u64,
    ) -> ContainerStats {
        let now = now_nanos();
        let running = c.phase == ContainerPhase::Running;
        let cgroup = running.then(|| self.cgroup_usage(c)).flatten();
        let usage = match cgroup {
            Some(u) => TreeUsage {
                cpu_ns: u.cpu_ns,
                rss_bytes: u.rss_bytes,
                working_set_bytes: u.working_set_bytes,
                usage_bytes: u.memory_bytes,
                processes: u.processes,
                ..Default::default()
            },
            None if running => tree_usage(table, c.pid, tick, page),
            None => TreeUsage::default(),
        };
        let disk = self.storage.rootfs().usage(&c.id);
        ContainerStats {
            attributes: Some(ContainerAttributes {
                id: c.id.clone(),
                metadata: c.config.metadata.clone(),
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
            }),
            cpu: Some(self.cpu_usage(&c.id, now, usage.cpu_ns)),
            memory: Some(memory_usage(now, &usage)),
            writable_layer: Some(FilesystemUsage {
                timestamp: now,
                fs_id: Some(FilesystemIdentifier {
                    mountpoint: self.storage.rootfs().upper(&c.id).display().to_string(),
                }),
                used_bytes: value(disk.bytes),
                inodes_used: value(disk.inodes),
            }),
            swap: None,
            io: None,
        }
    }

    /// Cumulative CPU and the rate since the previous sample of `key`.
    fn cpu_usage(&self, key: &str, now: i64, cpu_ns: u64) -> CpuUsage {
        let mut samples = self.cpu_samples.lock().unwrap_or_else(|p| p.into_inner());
        let rate = samples.get(key).and_then(|(then, before)| {
            let elapsed = u64::try_from(now - then).ok().filter(|e| *e > 0)?;
            Some(cpu_ns.saturating_sub(*before) as u128 * 1_000_000_000 / elapsed as u128)
        });
        samples.insert(key.to_owned(), (now, cpu_ns));
        CpuUsage {
            timestamp: now,
            usage_core_nano_seconds: value(cpu_ns),
            usage_nano_cores: rate.map(|r| UInt64Value { value: r as u64 }),
            psi: None,
        }
    }

    /// Stats of one pod sandbox.
    pub fn pod_stats(&self, id: &str) -> Result<PodSandboxStats, LifecycleError> {
        let pod = self.pod(id)?;
        let containers = self.list_container_stats(Some(ContainerStatsFilter {
            pod_sandbox_id: pod.id.clone(),
            ..Default::default()
        }));
        Ok(self.pod_stats_of(&pod, containers))
    }

    /// Stats of the pods matching `filter`.
    pub fn list_pod_stats(&self, filter: Option<PodSandboxStatsFilter>) -> Vec<PodSandboxStats> {
        let all = self.list_container_stats(None);
        let pods: Vec<PodState> = self
            .pods_mut()
            .values()
            .filter(|p| p.created_at != 0)
            .filter(|p| {
                filter.as_ref().is_none_or(|f| {
                    (f.id.is_empty() || p.id.starts_with(&f.id))
                        && f.label_selector
                            .iter()
                            .all(|(k, v)| p.config.labels.get(k) == Some(v))
                })
            })
            .cloned()
            .collect();
        pods.iter()
            .map(|pod| {
                let ids: Vec<String> = self.containers_of(&pod.id);
                let mine = all
                    .iter()
                    .filter(|s| s.attributes.as_ref().is_some_and(|a| ids.contains(&a.id)))
                    .cloned()
                    .collect();
                self.pod_stats_of(pod, mine)
            })
            .collect()
    }

    fn pod_stats_of(&self, pod: &PodState, containers: Vec<ContainerStats>) -> PodSandboxStats {
        let now = now_nanos();
        let sum = |get: &dyn Fn(&ContainerStats) -> Option<u64>| -> u64 {
            containers.iter().filter_map(get).sum()
        };
        let cpu_ns = sum(&|s| {
            s.cpu
                .as_ref()?
                .usage_core_nano_seconds
                .as_ref()
                .map(|v| v.value)
        });
        let rss = sum(&|s| s.memory.as_ref()?.rss_bytes.as_ref().map(|v| v.value));
        let processes = self.pod_process_count(pod);
        let memory = memory_usage(
            now,
            &TreeUsage {
                rss_bytes: rss,
                ..Default::default()
            },
        );
        PodSandboxStats {
            attributes: Some(PodSandboxAttributes {
                id: pod.id.clone(),
                metadata: pod.config.metadata.clone(),
                labels: pod.config.labels.clone(),
                annotations: pod.config.annotations.clone(),
            }),
            linux: Some(LinuxPodSandboxStats {
                cpu: Some(self.cpu_usage(&format!("pod/{}", pod.id), now, cpu_ns)),
                memory: Some(memory),
                network: self.pod_network_usage(pod, now),
                process: Some(ProcessUsage {
                    timestamp: now,
                    process_count: value(processes),
                }),
                containers,
                io: None,
            }),
            windows: None,
        }
    }

    fn pod_process_count(&self, pod: &PodState) -> u64 {
        let table = process_table();
        let (tick, page) = clock();
        self.containers_snapshot()
            .iter()
            .filter(|c| c.pod_id == pod.id && c.phase == ContainerPhase::Running)
            .map(|c| tree_usage(&table, c.pid, tick, page).processes)
            .sum()
    }

    /// Interface counters read inside the pod's pinned network namespace.
    fn pod_network_usage(&self, pod: &PodState, now: i64) -> Option<NetworkUsage> {
        if !pod.namespaces.network || pod.phase != PodPhase::Ready {
            return None;
        }
        let pin = PodDir::new(&self.runtime_root, &pod.id).ns("net");
        let text = ucri_rootless::enter::run_in_netns_thread(&pin, || {
            std::fs::read_to_string("/proc/thread-self/net/dev")
        })
        .ok()?
        .ok()?;
        let interfaces = parse_net_dev(&text);
        let default_interface = interfaces
            .iter()
            .find(|i| i.name == ucri_net::cni::POD_IFNAME)
            .cloned();
        Some(NetworkUsage {
            timestamp: now,
            default_interface,
            interfaces,
        })
    }
}

fn memory_usage(now: i64, usage: &TreeUsage) -> MemoryUsage {
    MemoryUsage {
        timestamp: now,
        working_set_bytes: value(nonzero_or(usage.working_set_bytes, usage.rss_bytes)),
        available_bytes: None,
        usage_bytes: value(nonzero_or(usage.usage_bytes, usage.rss_bytes)),
        rss_bytes: value(usage.rss_bytes),
        page_faults: value(usage.minor_faults),
        major_page_faults: value(usage.major_faults),
        psi: None,
    }
}

fn nonzero_or(value: u64, fallback: u64) -> u64 {
    if value == 0 {
        fallback
    } else {
        value
    }
}

fn stats_filter_matches(c: &ContainerState, f: &ContainerStatsFilter) -> bool {
    (f.id.is_empty() || c.id.starts_with(&f.id))
        && (f.pod_sandbox_id.is_empty() || c.pod_id.starts_with(&f.pod_sandbox_id))
        && f.label_selector
            .iter()
            .all(|(k, v)| c.config.labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(ppid: i32, cpu: u64, reaped: u64, rss: u64) -> Proc {
        Proc {
            ppid,
            cpu_ticks: cpu,
            reaped_ticks: reaped,
            rss_pages: rss,
            minor_faults: 1,
            major_faults: 0,
        }
    }

    #[test]
    fn stat_lines_with_spaces_in_the_name_are_parsed() {
        let line = "42 (my (odd) name) S 7 42 42 0 -1 4194560 100 0 3 0 11 22 33 44 20 0 1 0 \
                    12345 8388608 512 18446744073709551615";
        let p = parse_stat(line).expect("parse");
        assert_eq!(p.ppid, 7);
        assert_eq!(p.cpu_ticks, 33);
        assert_eq!(p.reaped_ticks, 77);
        assert_eq!(p.rss_pages, 512);
        assert_eq!((p.minor_faults, p.major_faults), (100, 3));
    }

    #[test]
    fn the_tree_sums_descendants_only() {
        let table = HashMap::from([
            (10, proc(1, 5, 2, 10)),
            (11, proc(10, 3, 0, 20)),
            (12, proc(11, 1, 0, 5)),
            (20, proc(1, 100, 0, 1000)),
        ]);
        let usage = tree_usage(&table, 10, 10, 4096);
        assert_eq!(usage.processes, 3);
        assert_eq!(usage.cpu_ns, (5 + 3 + 1 + 2) * 10);
        assert_eq!(usage.rss_bytes, 35 * 4096);
        assert_eq!(tree_usage(&table, 99, 10, 4096), TreeUsage::default());
    }

    #[test]
    fn net_dev_counters_skip_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
             lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
             eth0:    5000      10    2    0    0     0          0         0     7000      12    1    0    0     0       0          0\n";
        let got = parse_net_dev(text);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, "eth0");
        assert_eq!(got[0].rx_bytes, value(5000));
        assert_eq!(got[0].rx_errors, value(2));
        assert_eq!(got[0].tx_bytes, value(7000));
        assert_eq!(got[0].tx_errors, value(1));
    }
}
