//! `dbe`: the battery-emulator bridge daemon and its tools. This binary owns I/O and nothing else; every
//! decision is made in `dbe-core`.

mod clock;
mod decode;
mod options;
// The relay outputs are built ahead of their wiring into the bridge loop (issue 13): until then parts of their API
// are used only by `dbe contactors open` and the tests.
#[allow(dead_code)]
mod outputs;
mod ports;
mod realtime;
mod recorder;
mod replay;
mod run;
mod sd_notify;
mod services;
mod share;
mod sim;
mod state;

use dbe_services::hub;
use std::sync::Arc;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use dbe_core::battery::{BatteryKind, BATTERIES};
use dbe_core::inverter::{InverterKind, INVERTERS};

#[derive(Parser)]
#[command(name = "dbe", version, about = "DBE: bridge a second-life EV battery pack to a home inverter")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a simulated pack, the bridge and a simulated inverter on an in-process bus.
    Demo {
        #[arg(long, default_value = "nissan-leaf", value_parser = parse_battery)]
        battery: BatteryKind,
        #[arg(long, default_value = "pylon-can", value_parser = parse_inverter)]
        inverter: InverterKind,
        /// Simulated seconds per wall-clock second.
        #[arg(long, default_value_t = 1.0, value_parser = parse_speed)]
        speed: f64,
        /// Stop after this much simulated time (e.g. 90s, 10m, 2h, 1d).
        #[arg(long, value_parser = parse_duration)]
        duration: Option<dbe_core::Duration>,
        /// One JSON object per line instead of a status line.
        #[arg(long)]
        json: bool,
        /// Peak household demand in W (positive charges from solar at noon, negative discharges at night).
        #[arg(long, default_value_t = 4000)]
        peak_w: i32,
        /// Publish telemetry to and take commands from this MQTT broker (HOST:PORT), as `dbe run` does.
        #[arg(long)]
        mqtt: Option<String>,
        /// RS485 protocols: answer on this serial port (or pty) instead of a simulated inverter, so any client or a
        /// real inverter can talk to the simulated pack.
        #[arg(long)]
        serial: Option<String>,
        /// Baud rate for --serial.
        #[arg(long, default_value_t = 9600)]
        baud: u32,
        /// Serve the dashboard here (port 0: any free port); `off` to serve none.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: String,
        /// Dashboard password (needed when --http is not a loopback address).
        #[arg(long)]
        password: Option<String>,
    },
    /// Hash a dashboard password for `web.password_hash` (reads it from standard input).
    HashPassword,
    /// Decode a candump log (`(ts) iface ID#DATA [R|T]`) with a battery driver and print the battery state as JSON.
    ///
    /// Only received frames (marked `R`, or unmarked) are decoded; frames marked `T` were sent by the logger
    /// (DBE's own keep-alives and polls in its recordings) and are skipped unless --include-sent.
    Decode {
        #[arg(long, value_parser = parse_battery)]
        battery: BatteryKind,
        /// Print the state after every frame that changed something, not only at the end.
        #[arg(long)]
        each: bool,
        /// Decode frames marked `T` (sent by the logger) too.
        #[arg(long)]
        include_sent: bool,
        file: PathBuf,
    },
    /// List battery drivers and inverter protocols with what each supports.
    List,
    /// Run the bridge as configured (the daemon).
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// error, warn, info, debug or trace (RUST_LOG overrides).
        #[arg(long, default_value = "info")]
        log_level: String,
        /// Record all CAN traffic, received (`R`) and sent (`T`), as candump logs in this folder (overrides
        /// record.dir).
        #[arg(long)]
        record: Option<PathBuf>,
        /// Print the status as one JSON line a second on stdout.
        #[arg(long)]
        json: bool,
        /// Lock memory and run with SCHED_FIFO priority (needs root or CAP_IPC_LOCK + CAP_SYS_NICE; see README).
        #[arg(long)]
        realtime: bool,
    },
    /// Drive the bridge from a recorded candump log and print what the inverter would have been told.
    ///
    /// Only received frames (marked `R`, or unmarked) drive the bridge; frames marked `T` are what the recording
    /// DBE sent. With --compare, nothing else is printed but where what DBE sends now differs from those `T`
    /// frames: per port and CAN id, the n-th frame sent now against the n-th in the log, by payload (and by time
    /// with --time-tolerance); a frame only one side has is a difference too, except in the last 200 ms of the
    /// compared span. The order between ids and exact times are not compared (the replayed clock starts at the
    /// first line). The last --tail seconds are left out: commands are not in a log, and a clean shutdown ends
    /// with DBE's safe stop. Exit status 1 when there is a difference.
    Replay {
        #[arg(long, value_parser = parse_battery)]
        battery: BatteryKind,
        #[arg(long, default_value = "pylon-can", value_parser = parse_inverter)]
        inverter: InverterKind,
        /// Replay at the recorded speed instead of as fast as possible.
        #[arg(long)]
        realtime: bool,
        /// A config file whose limits to apply (default: the default limits).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Feed frames marked `T` (sent by the logger) to the bridge too.
        #[arg(long)]
        include_sent: bool,
        /// Compare what DBE sends now with the frames the log marks `T`; print the first differences.
        #[arg(long)]
        compare: bool,
        /// With --compare: seconds at the end of the log left out (the safe stop of a clean shutdown).
        #[arg(long, default_value_t = 3.5, requires = "compare")]
        tail: f64,
        /// With --compare: a frame sent more than this many ms from its recorded time is a difference too.
        #[arg(long, requires = "compare")]
        time_tolerance: Option<u64>,
        /// With --compare: print at most this many differences.
        #[arg(long, default_value_t = 10, requires = "compare")]
        max_differences: usize,
        file: PathBuf,
    },
    /// Run simulators on an in-process bus exposed on a real wire (slcan adapter, socketcand server), so `dbe run`,
    /// python-can or SavvyCAN can reach them as they would hardware. Prints JSON lines: ready, then status.
    Simulate {
        /// Put a simulated pack on the bus: a battery driver's name (`--pack` alone: nissan-leaf).
        #[arg(long, num_args = 0..=1, default_missing_value = "nissan-leaf", value_parser = parse_sim_pack)]
        pack: Option<&'static dbe_sim::pack::PackEntry>,
        /// Put a simulated inverter speaking this CAN protocol on the bus.
        #[arg(long, value_parser = parse_inverter)]
        inverter: Option<InverterKind>,
        /// Be an slcan adapter on this serial device or pty (e.g. one end of a socat pty pair).
        #[arg(long)]
        slcan: Option<String>,
        /// Serve the bus as socketcand on this address (HOST:PORT; port 0 picks a free one).
        #[arg(long)]
        socketcand: Option<String>,
        /// Add this many filler frames per second to the bus (a 500 kbit/s bus carries about 4000).
        #[arg(long, default_value_t = 0)]
        rate: u32,
        /// The simulated pylon-can inverter polls every N ms instead of every second (benchmarks).
        #[arg(long, requires = "inverter", value_parser = clap::value_parser!(u64).range(10..=60_000))]
        poll_ms: Option<u64>,
        /// error, warn, info, debug or trace (logs go to standard error).
        #[arg(long, default_value = "warn")]
        log_level: String,
    },
    /// Validate a config file: every error with its key and line.
    CheckConfig { file: PathBuf },
    /// Relay outputs of the contactors (`[contactors]`).
    Contactors {
        #[command(subcommand)]
        action: ContactorsCmd,
    },
    /// Print the complete, commented default config.
    ConfigExample,
}

#[derive(Subcommand)]
enum ContactorsCmd {
    /// Force every configured relay output open and exit (non-zero if the device did not do it). For
    /// `ExecStopPost=`: a crash, a kill or a stop of the daemon leaves the pack open.
    Open {
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // journald adds its own timestamps; keep lines short when running under systemd.
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    // Colours only on a terminal: journald, log files and pipes get plain text (and NO_COLOR is honoured).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    if under_systemd {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

/// Reads and checks a config file; each warning (an old key name) goes to `warn`, also when the file is refused.
fn load_config_with(path: &std::path::Path, warn: impl Fn(&str)) -> Result<dbe_services::config::Config> {
    let parsed = dbe_services::config::Config::load_with_warnings(path);
    for w in &parsed.warnings {
        warn(&format!("{}: {w}", path.display()));
    }
    parsed.config.map_err(|e| anyhow::anyhow!("{}: invalid config:\n{e}", path.display()))
}

fn load_config(path: &std::path::Path) -> Result<dbe_services::config::Config> {
    load_config_with(path, |w| eprintln!("warning: {w}"))
}

fn parse_battery(s: &str) -> Result<BatteryKind, String> {
    BatteryKind::from_name(s).ok_or_else(|| {
        let names: Vec<_> = BATTERIES.iter().map(|b| b.name).collect();
        format!("unknown battery '{s}', expected one of: {}", names.join(", "))
    })
}

fn parse_sim_pack(s: &str) -> Result<&'static dbe_sim::pack::PackEntry, String> {
    dbe_sim::pack::PackEntry::by_name(s).map_err(|e| e.to_string())
}

fn parse_inverter(s: &str) -> Result<InverterKind, String> {
    InverterKind::from_name(s).ok_or_else(|| {
        let names: Vec<_> = INVERTERS.iter().map(|i| i.name).collect();
        format!("unknown inverter protocol '{s}', expected one of: {}", names.join(", "))
    })
}

fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.01..=1_000_000.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a speed between 0.01 and 1000000")),
    }
}

/// `90`, `90s`, `10m`, `2h`, `1d`, `500ms`.
pub fn parse_duration(s: &str) -> Result<dbe_core::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("'{s}' is not a duration like 90s, 10m, 2h or 1d"))?;
    let ms = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("'{s}': unknown unit '{unit}', expected ms, s, m, h or d")),
    };
    n.checked_mul(ms).map(dbe_core::Duration::from_millis).ok_or_else(|| format!("'{s}' is too long"))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Demo { battery, inverter, speed, duration, json, peak_w, mqtt, serial, baud, http, password } => {
            let mut cfg = dbe_services::config::Config::default();
            cfg.battery.kind = battery;
            cfg.inverter.protocol = inverter;
            cfg.battery.port = "sim:".into();
            cfg.inverter.port = "sim:".into();
            if inverter.info().transport == dbe_core::inverter::Transport::Serial {
                cfg.rs485.port = "sim:".into();
            }
            let pack = dbe_sim::pack::for_battery(battery).map_err(|e| anyhow::anyhow!("--battery {battery}: {e}"))?;
            if pack.relays == dbe_sim::pack::RelayWiring::Hardwired {
                // Hardwired relays (a LEAF's), as on the real pack: the demo wires them to simulated relay
                // outputs (negative, precharge, positive) driven through the precharge sequence.
                cfg.contactors.mode = "relays".into();
                cfg.contactors.outputs = "sim:".into();
                cfg.contactors.negative = "0".into();
                cfg.contactors.precharge = "1".into();
                cfg.contactors.positive = "2".into();
            } else {
                // The pack's BMS closes its own contactors when the bridge's frames ask it to.
                cfg.contactors.mode = "can".into();
            }
            cfg.web.enabled = http != "off";
            if cfg.web.enabled {
                cfg.web.bind = http;
            }
            if let Some(pw) = password {
                cfg.web.password_hash = dbe_services::web::hash_password(&pw);
            }
            if let Some(addr) = mqtt {
                let (host, port) = addr.rsplit_once(':').unwrap_or((&addr, "1883"));
                cfg.mqtt.enabled = true;
                cfg.mqtt.host = host.to_string();
                cfg.mqtt.port = port.parse().map_err(|_| anyhow::anyhow!("--mqtt {addr}: '{port}' is not a port"))?;
                cfg.mqtt.validate().map_err(|e| anyhow::anyhow!("--mqtt {addr}: {e}"))?;
            }
            // The same checks as a config file gets: a protocol that cannot carry the pack is refused with the
            // message `dbe check-config` gives, rather than demonstrated answering "disabled" for ever.
            cfg.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
            init_logging("info");
            // The demo bridges with the same settings a default config file gives, so the Settings page shows
            // exactly what is in force.
            let bridge = options::bridge_config(&cfg);
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            if let Some(path) = serial {
                if inverter.info().transport != dbe_core::inverter::Transport::Serial {
                    bail!(
                        "--serial needs an RS485 protocol (pylontech-rs485 or byd-modbus), not {}",
                        inverter.info().name
                    );
                }
                // The daemon's own path: a simulated pack on an in-process bus, the real serial port for the inverter.
                cfg.battery.port = "sim:".into();
                cfg.rs485.port = path;
                cfg.rs485.baud = baud;
                cfg.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
                eprintln!(
                    "dbe demo: simulated {} answering as {} on {} at {baud} baud",
                    battery.info().name,
                    inverter.info().name,
                    cfg.rs485.port
                );
                return rt.block_on(run::run(cfg, None, None, json)).map(|_| ());
            }
            rt.block_on(async move {
                let (end, handle) = hub::hub();
                let store = Arc::new(dbe_services::config_store::ConfigFile::in_memory(cfg.clone()));
                let changes = store.subscribe();
                let services = services::start(&cfg, handle, Some(store)).await?;
                if let Some(url) = &services.web_url {
                    eprintln!("dbe demo: dashboard at {url}");
                }
                let peak = dbe_core::units::Watts(peak_w);
                let opts = sim::demo::DemoOptions { bridge, pack, speed, duration, json, peak };
                sim::demo::run(opts, end, services.frames.clone(), changes).await
            })
        }
        Cmd::Decode { battery, each, include_sent, file } => decode::run(battery, each, include_sent, &file),
        Cmd::Run { config, log_level, record, json, realtime: rt_mode } => {
            init_logging(&log_level);
            if rt_mode {
                let problems = realtime::enable();
                if problems.is_empty() && realtime::is_fifo() {
                    tracing::info!("real-time mode: memory locked, SCHED_FIFO priority {}", realtime::PRIORITY);
                } else {
                    for p in problems {
                        tracing::warn!("real-time mode: {p}; running without it");
                    }
                }
            }
            loop {
                let cfg = load_config_with(&config, |w| tracing::warn!("{w}"))?;
                // A fresh runtime each time: dropping the old one ends every task of the old ports and services,
                // so the new ones can open the same devices and addresses.
                // One thread (`run`'s module doc, "One thread"): the bridge, its ports and the services wake
                // together, once per batch, rather than handing every batch from thread to thread.
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("starting the async runtime")?;
                let exit = rt.block_on(run::run(cfg, Some(&config), record.clone(), json))?;
                rt.shutdown_timeout(std::time::Duration::from_secs(2));
                match exit {
                    run::LoopExit::Shutdown => return Ok(()),
                    run::LoopExit::Reload => tracing::info!("starting again from {}", config.display()),
                }
            }
        }
        Cmd::Replay {
            battery,
            inverter,
            realtime,
            config,
            include_sent,
            compare,
            tail,
            time_tolerance,
            max_differences,
            file,
        } => {
            let mut cfg = match config {
                Some(p) => load_config(&p)?,
                None => dbe_services::config::Config::default(),
            };
            cfg.battery.kind = battery;
            cfg.inverter.protocol = inverter;
            if inverter == InverterKind::PylonRs485 {
                dbe_services::config::pylontech_rs485_fits(battery)
                    .map_err(|e| anyhow::anyhow!("inverter {}: cannot carry this pack: {e}", inverter.info().name))?;
            }
            if !(tail.is_finite() && tail >= 0.0) {
                anyhow::bail!("--tail {tail}: expected seconds, 0 or more");
            }
            let compare = compare.then_some(replay::CompareOptions {
                tail_ms: (tail * 1000.0) as u64,
                time_tolerance_ms: time_tolerance,
                max_shown: max_differences,
            });
            let opts = replay::ReplayOptions { realtime, include_sent, compare };
            if !replay::run(options::bridge_config(&cfg), &opts, &file)? {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Simulate { pack, inverter, slcan, socketcand, rate, poll_ms, log_level } => {
            init_logging(&log_level);
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(sim::simulate::run(sim::simulate::Options { pack, inverter, slcan, socketcand, rate, poll_ms }))
        }
        Cmd::Contactors { action: ContactorsCmd::Open { config } } => {
            let done = outputs::open_command(&config).map_err(|e| anyhow::anyhow!("dbe contactors open: {e}"))?;
            println!("dbe contactors open: {done}");
            Ok(())
        }
        Cmd::CheckConfig { file } => {
            load_config(&file)?;
            println!("{}: ok", file.display());
            Ok(())
        }
        Cmd::HashPassword => {
            let mut pw = String::new();
            std::io::stdin().read_line(&mut pw).context("reading the password from standard input")?;
            let pw = pw.trim_end_matches(['\r', '\n']);
            if pw.is_empty() {
                bail!("empty password");
            }
            println!("{}", dbe_services::web::hash_password(pw));
            Ok(())
        }
        Cmd::ConfigExample => {
            print!("{}", dbe_services::config::example());
            Ok(())
        }
        Cmd::List => {
            println!("Batteries:");
            for b in BATTERIES {
                println!("  {:<16} {}\n  {:<16} supports: {}", b.name, b.title, "", b.supports);
            }
            println!("Inverter protocols:");
            for i in INVERTERS {
                println!("  {:<16} {}\n  {:<16} supports: {}", i.name, i.title, "", i.supports);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_garbage() {
        assert_eq!(parse_duration("90").unwrap().as_millis(), 90_000);
        assert_eq!(parse_duration("10m").unwrap().as_millis(), 600_000);
        assert_eq!(parse_duration("1d").unwrap().as_millis(), 86_400_000);
        assert_eq!(parse_duration("500ms").unwrap().as_millis(), 500);
        assert!(parse_duration("1w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
