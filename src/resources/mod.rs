//! The resource figures each status report carries to the hub (uses nothing of the agent): CPU and memory of Node-RED and
//! of the agent, Node-RED's event-loop lag (its health probe's latency), the state directory's
//! free space, uptime and load. Each figure that cannot be read is left out, not guessed.

use redtether_host::proc_stat::{self, CpuMeter};
use redtether_proto::wire::DeviceResources;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Keeps the previous CPU readings, so each sample says the CPU use since the one before.
#[derive(Debug)]
pub struct ResourceSampler {
    state_dir: PathBuf,
    node_red: CpuMeter,
    agent: CpuMeter,
}

impl ResourceSampler {
    pub fn new(state_dir: PathBuf) -> ResourceSampler {
        let ticks = proc_stat::ticks_per_second();
        ResourceSampler { state_dir, node_red: CpuMeter::new(ticks), agent: CpuMeter::new(ticks) }
    }

    /// Reads the figures now. `node_red_pid`: the running Node-RED, if any; `probe_latency`: its
    /// last health probe's.
    pub fn sample(&mut self, node_red_pid: Option<u32>, probe_latency: Option<Duration>) -> DeviceResources {
        let now = Instant::now();
        let agent_pid = std::process::id();
        let node_red_cpu_percent =
            node_red_pid.and_then(|pid| self.node_red.update(pid, proc_stat::cpu_ticks(pid).ok()?, now)).map(round2);
        let agent_cpu_percent =
            proc_stat::cpu_ticks(agent_pid).ok().and_then(|t| self.agent.update(agent_pid, t, now)).map(round2);
        DeviceResources {
            node_red_cpu_percent,
            node_red_rss_bytes: node_red_pid.and_then(|pid| proc_stat::rss_bytes(pid).ok()),
            agent_cpu_percent,
            agent_rss_bytes: proc_stat::rss_bytes(agent_pid).ok(),
            event_loop_lag_ms: probe_latency.map(|d| round2(d.as_secs_f64() * 1000.0)),
            disk_free_bytes: proc_stat::free_bytes(&self.state_dir).ok(),
            uptime_secs: proc_stat::uptime_secs().ok().map(|s| s as u64),
            load_average: proc_stat::loadavg().ok(),
        }
    }
}

/// Two decimals are all a chart needs, and keep the report short.
fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_of_this_process_has_its_figures_and_cpu_from_the_second_on() {
        let dir = std::env::temp_dir();
        let mut sampler = ResourceSampler::new(dir);
        let me = std::process::id();
        let first = sampler.sample(Some(me), Some(Duration::from_micros(2500)));
        assert_eq!(first.node_red_cpu_percent, None, "no CPU figure from one reading");
        assert!(first.node_red_rss_bytes.unwrap() > 0);
        assert!(first.agent_rss_bytes.unwrap() > 0);
        assert_eq!(first.event_loop_lag_ms, Some(2.5));
        assert!(first.disk_free_bytes.unwrap() > 0);
        assert!(first.load_average.is_some());
        std::thread::sleep(Duration::from_millis(20));
        let second = sampler.sample(Some(me), None);
        assert!(second.node_red_cpu_percent.is_some_and(|p| p >= 0.0));
        assert!(second.agent_cpu_percent.is_some_and(|p| p >= 0.0));
        assert_eq!(second.event_loop_lag_ms, None);
        // Node-RED not running: its figures are absent, not zero.
        let third = sampler.sample(None, None);
        assert_eq!((third.node_red_cpu_percent, third.node_red_rss_bytes), (None, None));
    }
}
