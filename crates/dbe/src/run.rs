//! `dbe run`: the daemon. Opens the configured ports, runs the bridge loop, serves its consumers, and shuts down
//! into the safe state.
//!
//! The bridge loop is the quinn-proto pattern: `select!` over received frames, commands and the bridge's next
//! deadline; read the clock once per turn; call `handle_*`; drain every `poll_*`. Nothing in the loop waits on a
//! consumer: frames go out through bounded queues, the snapshot through a watch channel.
//!
//! # One thread
//! The daemon runs on a single-threaded runtime: the bridge loop, the port tasks, the web server and MQTT share one
//! thread. At a full bus the cost of the daemon is its wake-ups, not its work (issue 18: most of its CPU was the
//! kernel switching between a port thread and the bridge thread for every batch), so the bridge waking for a
//! deadline, a paced battery port reading what arrived meanwhile (`ports::pace`), and the bridge taking it happen in
//! one wake-up. Nothing on this thread blocks: file writes of the recorder run on a thread of their own (a slow SD
//! card must not delay a keep-alive), password checks and config saves on tokio's blocking pool. A task that
//! hangs the thread stops the systemd watchdog keep-alives from this loop, so the daemon is killed and
//! `ExecStopPost` opens the outputs.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use anyhow::{Context, Result};
use dbe_core::bridge::{Bridge, BridgeConfig, Port};
use dbe_core::command::Command;
use dbe_core::events::EventKind;
use dbe_services::config::Config;
use dbe_services::hub::{Envelope, EventMessage, LoopEnd, Request, Snapshot};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;

use crate::clock::{sleep_until_opt, Clock};
use crate::options::bridge_config;
use crate::ports::serial::{SerialHandle, SerialIn};
use crate::ports::{open_ports, PortState, Ports, Received};

/// How long SIGTERM waits for the inverter to be told 0 A and the pack to be asked to open before exiting.
pub const SHUTDOWN_GRACE: StdDuration = StdDuration::from_secs(3);
const PUBLISH_EVERY: StdDuration = StdDuration::from_millis(200);

async fn recv_serial(s: &mut Option<SerialHandle>) -> Option<SerialIn> {
    match s {
        Some(s) => s.rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn state_changed(rx: &mut Option<tokio::sync::watch::Receiver<PortState>>) -> Option<PortState> {
    match rx {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(rx.borrow().clone()),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// The most frames taken in one turn of the loop (then the bridge sends what they call for).
const GATHER_MAX: usize = 256;

/// The frame that woke the loop and whatever both ports have delivered meanwhile, into `out` in the order the
/// ports read them. Taking one frame per wake-up let the inverter's poll be answered before battery frames read
/// earlier were handled (the two channels are polled in random order), so what the recording showed and what the
/// bridge had heard differed, and `dbe replay --compare` saw another answer; it also cost a wake-up per frame.
///
/// Allocates nothing: `out` keeps its capacity ([`GATHER_MAX`]) from turn to turn.
fn gather(
    first: (Port, Received),
    brx: &mut Receiver<Received>,
    irx: &mut Option<Receiver<Received>>,
    out: &mut Vec<Arrived>,
) -> Result<()> {
    use tokio::sync::broadcast::error::TryRecvError;
    out.clear();
    out.push(Arrived { port: first.0, order: 0, rcv: first.1 });
    for (port, rx) in [(Port::Battery, Some(brx)), (Port::Inverter, irx.as_mut())] {
        let Some(rx) = rx else { continue };
        while out.len() < GATHER_MAX {
            match rx.try_recv() {
                Ok(rcv) => out.push(Arrived { port, order: out.len() as u16, rcv }),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Lagged(n)) => tracing::warn!("bridge fell behind the {port:?} port by {n} frames"),
                Err(TryRecvError::Closed) => anyhow::bail!("{port:?} port closed"),
            }
        }
    }
    // By time, then in the order taken: a port's own frames read in the same microsecond keep their order. (A
    // stable sort would too, but allocates a buffer for more than a few dozen frames; this one sorts in place.)
    out.sort_unstable_by_key(|a| (a.rcv.at_us, a.order));
    Ok(())
}

/// A frame [`gather`] took, with its place in the order taken.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Arrived {
    port: Port,
    order: u16,
    rcv: Received,
}

/// Each frame in turn, and what it calls for sent before the next is handled: an answer carries what the bridge
/// had heard up to its poll, no more (as `dbe replay` reproduces it).
fn handle_arrived(bridge: &mut Bridge, clock: Clock, ports: &Ports, arrived: &[Arrived]) {
    let now = clock.now();
    for &Arrived { port, rcv, .. } in arrived {
        let _ = bridge.handle_frame(now, port, &rcv.frame);
        if ports.shared && port == Port::Battery {
            let _ = bridge.handle_frame(now, Port::Inverter, &rcv.frame);
        }
        send_due(bridge, ports, now);
    }
}

/// Queues every frame the bridge has to send now. The ports record what they send (and the CAN view shows it)
/// once their transport took it, stamped with when it was queued here.
fn send_due(bridge: &mut Bridge, ports: &Ports, now: dbe_core::Instant) {
    while let Some((port, frame)) = bridge.poll_transmit(now) {
        match port {
            Port::Battery => ports.battery.send(frame),
            Port::Inverter => ports.inverter.as_ref().is_some_and(|p| p.send(frame)),
        };
    }
}

async fn recv_opt(rx: &mut Option<Receiver<Received>>) -> Result<Received, RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// How the bridge loop behaves apart from the bridge's own config.
#[derive(Default)]
pub struct LoopOptions {
    /// Start bridging at once (otherwise stopped until a `Start` command).
    pub autostart: bool,
    /// Print the status as one JSON line a second on stdout.
    pub print_json: bool,
    /// Where the latches are kept across restarts (`None`: not kept).
    pub state: Option<crate::state::StateFile>,
    /// The latches to start from (the state file's, read by the caller).
    pub latches: dbe_core::supervisor::Latches,
    /// The relay outputs the bridge drives in `relays` mode (and the inputs it reads).
    pub outputs: Option<crate::outputs::Outputs>,
    /// The equipment stop latches until `Start` (else it ends when its circuit closes again).
    pub equipment_stop_latching: bool,
}

/// Why the bridge loop ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LoopExit {
    /// SIGTERM / Ctrl-C.
    Shutdown,
    /// The config file was changed (Settings page): the daemon starts again from the saved file.
    Reload,
}

/// Config changes from the Settings page, and how the loop applies them.
pub struct ConfigChanges {
    pub rx: tokio::sync::watch::Receiver<Arc<Config>>,
    /// True: stop safely and return [`LoopExit::Reload`] (ports, MQTT and web may have changed). False: restart
    /// only the bridge with the new settings, in place (no file behind the settings, e.g. the demo).
    pub reload: bool,
}

async fn config_changed(c: &mut Option<ConfigChanges>) -> Arc<Config> {
    match c {
        Some(c) => match c.rx.changed().await {
            Ok(()) => c.rx.borrow_and_update().clone(),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Runs the bridge until `shutdown` resolves (or a config change needs a reload), then drives it into the safe
/// state and returns.
#[allow(clippy::too_many_arguments)]
pub async fn bridge_loop(
    cfg: BridgeConfig,
    opts: LoopOptions,
    ports: Ports,
    clock: Clock,
    mut end: LoopEnd,
    mut changes: Option<ConfigChanges>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<LoopExit> {
    let mut cfg = cfg;
    let mut exit = LoopExit::Shutdown;
    let mut autostart = opts.autostart;
    let mut state = opts.state;
    let outputs = opts.outputs;
    let mut outputs_state = outputs.as_ref().map(|o| o.state());
    let mut estop = EquipmentStop { latching: opts.equipment_stop_latching, stopped_it: false };
    let mut bridge = Bridge::start(cfg, clock.now(), autostart, opts.latches);
    let mut print = tokio::time::interval(StdDuration::from_secs(1));
    let mut ports = ports;
    let mut brx = ports.battery.subscribe();
    let mut irx = ports.inverter.as_ref().filter(|_| !ports.shared).map(|p| p.subscribe());
    let mut bstate = ports.battery.state.clone();
    let mut istate = match (&ports.inverter, &ports.serial) {
        (Some(p), _) if !ports.shared => Some(p.state.clone()),
        (_, Some(s)) => Some(s.state.clone()),
        _ => None,
    };
    let inverter_name = match (&ports.inverter, &ports.serial) {
        (Some(p), _) => p.spec.text.clone(),
        _ => "rs485".to_string(),
    };
    let mut serial_buf = vec![0u8; 8192];
    let mut publish = tokio::time::interval(PUBLISH_EVERY);
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // READY=1 and the watchdog keep-alives come from this loop itself: a hung loop is killed (dist/dbe.service).
    let mut systemd = crate::sd_notify::Systemd::from_env();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut stopping_until: Option<tokio::time::Instant> = None;
    let mut errors_seen = [0u64; 2];
    let mut arrived: Vec<Arrived> = Vec::with_capacity(GATHER_MAX);
    // What the ports read before this moment is not the bridge's (a recording has it, from before the bridge ran:
    // `dbe replay` skips what precedes the first sent frame, and the bridge's first turn comes at once).
    let started_us = clock.now_us();
    send_due(&mut bridge, &ports, clock.now());
    loop {
        let deadline = bridge.poll_timeout().map(|t| clock.deadline(t));
        let stop_at = stopping_until;
        tokio::select! {
            r = brx.recv() => match r {
                Ok(rcv) => {
                    gather((Port::Battery, rcv), &mut brx, &mut irx, &mut arrived)?;
                    arrived.retain(|a| a.rcv.at_us >= started_us);
                    handle_arrived(&mut bridge, clock, &ports, &arrived);
                }
                Err(RecvError::Lagged(n)) => tracing::warn!("bridge fell behind the battery port by {n} frames"),
                Err(RecvError::Closed) => anyhow::bail!("battery port closed"),
            },
            r = recv_opt(&mut irx) => match r {
                Ok(rcv) => {
                    gather((Port::Inverter, rcv), &mut brx, &mut irx, &mut arrived)?;
                    arrived.retain(|a| a.rcv.at_us >= started_us);
                    handle_arrived(&mut bridge, clock, &ports, &arrived);
                }
                Err(RecvError::Lagged(n)) => tracing::warn!("bridge fell behind the inverter port by {n} frames"),
                Err(RecvError::Closed) => anyhow::bail!("inverter port closed"),
            },
            _ = sleep_until_opt(deadline) => {
                bridge.handle_timeout(clock.now());
                // Awake anyway: the paced battery port reads what arrived meanwhile in this same wake-up.
                ports.battery.pace.kick();
            }
            Some(env) = end.requests.recv() => handle_request(&mut bridge, cfg, autostart, clock, env),
            _ = publish.tick() => {
                systemd.tick(std::time::Instant::now());
                // Controller errors (bus errors, bus-off, adapter error replies) and TX overflow counted by the
                // ports become events here, at most one per port per publish interval.
                for (k, port) in [Some(&ports.battery), ports.inverter.as_ref().filter(|_| !ports.shared)].into_iter().enumerate() {
                    let Some(port) = port else { continue };
                    let c = &port.counters;
                    let n = c.errors.load(std::sync::atomic::Ordering::Relaxed)
                        + c.tx_overflow.load(std::sync::atomic::Ordering::Relaxed);
                    if n > errors_seen[k] {
                        errors_seen[k] = n;
                        bridge.note_event(clock.now(), EventKind::CanBusError, true, k as i32 + 1);
                    }
                }
                end.snapshot.send_replace(Arc::new(Snapshot::of(&bridge, clock.now())));
            }
            _ = print.tick(), if opts.print_json => {
                let status = dbe_services::status::Status::of(&bridge, clock.now());
                println!("{}", serde_json::to_string(&status).unwrap_or_default());
            }
            Some(input) = recv_serial(&mut ports.serial) => match input {
                SerialIn::Bytes(b) => bridge.handle_inverter_bytes(clock.now(), &b),
                SerialIn::Silence => bridge.handle_inverter_silence(clock.now()),
            },
            Ok(()) = bstate.changed() => {
                let st = bstate.borrow().clone();
                note_port(&mut bridge, clock, &st, &ports.battery.spec.text, 1);
            }
            Some(st) = state_changed(&mut istate) => note_port(&mut bridge, clock, &st, &inverter_name, 2),
            Some(st) = outputs_changed(&mut outputs_state) => {
                relays_read_back(&mut bridge, clock, &st, &mut estop);
            }
            _ = &mut shutdown, if stopping_until.is_none() => {
                tracing::info!("stopping: telling the inverter 0 A and asking the pack to open its contactors");
                let _ = bridge.handle_command(clock.now(), Command::Stop);
                stopping_until = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
            }
            new = config_changed(&mut changes), if stopping_until.is_none() => {
                if changes.as_ref().is_some_and(|c| c.reload) {
                    tracing::info!("settings saved: stopping safely, then starting again from the saved file");
                    let _ = bridge.handle_command(clock.now(), Command::Stop);
                    stopping_until = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
                    exit = LoopExit::Reload;
                } else {
                    tracing::info!("settings changed: restarting the bridge with them (latches kept)");
                    cfg = bridge_config(&new);
                    autostart = new.autostart;
                    bridge = Bridge::start(cfg, clock.now(), autostart, bridge.latches());
                }
            }
            _ = sleep_until_opt(stop_at) => {
                end.snapshot.send_replace(Arc::new(Snapshot::of(&bridge, clock.now())));
                drain_events(&mut bridge, &end);
                break;
            }
        }
        let now = clock.now();
        send_due(&mut bridge, &ports, now);
        if let Some(serial) = &ports.serial {
            loop {
                match bridge.poll_inverter_bytes(now, &mut serial_buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if serial.tx.try_send(serial_buf[..n].to_vec()).is_err() {
                            tracing::warn!("serial reply dropped: the port's queue is full");
                        }
                    }
                    Err(e) => {
                        tracing::error!("serial reply dropped: {e}");
                        break;
                    }
                }
            }
        }
        if let (Some(o), Some(wanted)) = (&outputs, bridge.relay_outputs()) {
            o.set(relay_set(wanted));
        }
        save_state(&mut state, &mut bridge, clock);
        drain_events(&mut bridge, &end);
    }
    // Whatever the sequence had reached, every output opens before the daemon goes (and ExecStopPost runs
    // `dbe contactors open` after it, for a crash or a kill).
    if let Some(o) = outputs {
        let last = o.shutdown().await;
        if !last.written.iter().flatten().all(|on| !on) {
            tracing::error!("relay outputs: not every output confirmed open at exit: {:?}", last.written);
        }
    }
    Ok(exit)
}

/// The sequencer's outputs as the outputs task's set.
fn relay_set(o: dbe_core::contactor::OutputStates) -> crate::outputs::OutputSet {
    use crate::outputs::{Output, OutputSet};
    OutputSet::OPEN
        .with(Output::Negative, o.negative)
        .with(Output::Precharge, o.precharge)
        .with(Output::Positive, o.positive)
        .with(Output::BmsPower, o.bms_power)
}

async fn outputs_changed(
    rx: &mut Option<tokio::sync::watch::Receiver<crate::outputs::OutputsState>>,
) -> Option<crate::outputs::OutputsState> {
    match rx {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(rx.borrow_and_update().clone()),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Whether the equipment stop stopped the bridge (so that a momentary one starts it again).
struct EquipmentStop {
    latching: bool,
    stopped_it: bool,
}

/// What the relay hardware reports, into the bridge: each output's read-back (a relay board; GPIO cannot), the
/// inverter's enable input, and the equipment stop (normally closed: an open circuit stops; an unknown one holds the
/// contactors open until it is read).
fn relays_read_back(bridge: &mut Bridge, clock: Clock, st: &crate::outputs::OutputsState, estop: &mut EquipmentStop) {
    use crate::outputs::Output;
    use dbe_core::contactor::Output as Core;
    let now = clock.now();
    for (o, core) in [
        (Output::Negative, Core::Negative),
        (Output::Precharge, Core::Precharge),
        (Output::Positive, Core::Positive),
        (Output::BmsPower, Core::BmsPower),
    ] {
        if let Some(v) = st.read_back[o.index()] {
            bridge.handle_relay_feedback(now, core, v);
        }
    }
    // An equipment stop not read yet (start-up) or unreadable (the board is not answering) holds the contactors
    // open like a withdrawn permission, without latching a stop: only a loop read open stops the bridge.
    let estop_unknown = st.equipment_stop_unknown();
    bridge.set_enable_input(if estop_unknown { Some(false) } else { st.inverter_allows_closing() });
    match st.equipment_stop() {
        Some(true) if estop_unknown => {}
        Some(true) if !estop.stopped_it => {
            tracing::warn!("equipment stop: stopping the bridge");
            estop.stopped_it = bridge.handle_command(now, Command::Stop).is_ok();
        }
        Some(false) if estop.stopped_it && !estop.latching => {
            tracing::info!("equipment stop released: starting again (momentary stop)");
            estop.stopped_it = false;
            let _ = bridge.handle_command(now, Command::Start);
        }
        Some(false) if estop.stopped_it => estop.stopped_it = false,
        _ => {}
    }
    if let Some(e) = &st.device_error {
        tracing::warn!("relay outputs: {e}");
    }
}

/// Writes the latches when they changed; a failed write raises `STATE_NOT_SAVED` and is retried.
fn save_state(state: &mut Option<crate::state::StateFile>, bridge: &mut Bridge, clock: Clock) {
    let Some(file) = state else { return };
    match file.save(bridge.latches()) {
        Ok(true) => {
            tracing::debug!(path = %file.path().display(), "state saved");
            bridge.note_event(clock.now(), EventKind::StateNotSaved, false, 0);
        }
        Ok(false) => {}
        Err(e) => {
            if !bridge.events().is_active(EventKind::StateNotSaved) {
                tracing::error!(path = %file.path().display(), "cannot write the state file: {e}");
            }
            bridge.note_event(clock.now(), EventKind::StateNotSaved, true, 0);
        }
    }
}

fn drain_events(bridge: &mut Bridge, end: &LoopEnd) {
    while let Some(o) = bridge.poll_event() {
        let msg = EventMessage::from(o);
        match o.kind.level() {
            dbe_core::events::Level::Error => {
                tracing::error!(event = msg.event_type, data = msg.data, "{}", msg.message)
            }
            dbe_core::events::Level::Warning => {
                tracing::warn!(event = msg.event_type, data = msg.data, "{}", msg.message)
            }
            dbe_core::events::Level::Info => tracing::info!(event = msg.event_type, data = msg.data, "{}", msg.message),
        }
        let _ = end.events.send(msg);
    }
}

fn note_port(bridge: &mut Bridge, clock: Clock, state: &PortState, name: &str, which: i32) {
    // The port task has logged why it went down (and each retry); the PORT_DOWN event gets its own line.
    let down = matches!(state, PortState::Down(_));
    if *state == PortState::Up {
        tracing::info!(port = %name, "port up");
    }
    bridge.note_event(clock.now(), EventKind::PortDown, down, which);
}

pub fn handle_request(bridge: &mut Bridge, cfg: BridgeConfig, autostart: bool, clock: Clock, env: Envelope) {
    let now = clock.now();
    let result = match env.request {
        Request::Core(cmd) => bridge.handle_command(now, cmd),
        Request::Restart => {
            // A restart never clears a latch: the new bridge carries them over (and honours `autostart`).
            *bridge = Bridge::start(cfg, now, autostart, bridge.latches());
            Ok(())
        }
        Request::Note { kind, active, data } => {
            bridge.note_event(now, kind, active, data);
            let _ = env.reply.send(Ok(()));
            return;
        }
    };
    match &result {
        Ok(()) => tracing::info!(source = env.source, "command {}: done", env.request.name()),
        Err(e) => tracing::warn!(source = env.source, "command {}: refused: {e}", env.request.name()),
    }
    let _ = env.reply.send(result);
}

/// Ends a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// Runs the daemon until SIGTERM ([`LoopExit::Shutdown`]) or until the Settings page saved a new config file
/// ([`LoopExit::Reload`]: the caller starts again from the file). `file` is where `cfg` came from; without one
/// (the demo on a serial port) settings changes restart the bridge in place and are not saved.
pub async fn run(
    cfg: Config,
    file: Option<&std::path::Path>,
    record: Option<std::path::PathBuf>,
    print_json: bool,
) -> Result<LoopExit> {
    let clock = Clock::new();
    let opened = crate::outputs::open(&cfg.contactors).context("contactors.outputs")?;
    let relays = opened.as_ref().and_then(|o| o.sim.as_ref()).map(|b| b.relays());
    let ports = open_ports(&cfg, clock, relays)?;
    let outputs = opened.map(|o| crate::outputs::Outputs::spawn(o.device));
    match crate::options::contactor_setup(&cfg).mode {
        dbe_core::contactor::ContactorMode::None => tracing::warn!(
            "contactors.mode = \"none\": DBE cannot open the pack; only a 0 A limit to the inverter protects it"
        ),
        dbe_core::contactor::ContactorMode::Relays => {
            tracing::info!(outputs = %cfg.contactors.outputs, "contactors: relay outputs with a precharge sequence")
        }
        dbe_core::contactor::ContactorMode::Can => tracing::info!("contactors: the pack closes them on CAN"),
    }
    let _shared = if crate::share::wanted(&cfg.share) {
        let port = ports
            .can_port(&cfg.share.port)
            .cloned()
            .with_context(|| format!("share.port = {:?}: the inverter has no CAN port", cfg.share.port))?;
        crate::share::start(&cfg.share, port, clock).await?
    } else {
        Vec::new()
    };
    let (end, handle) = dbe_services::hub::hub();
    let store = Arc::new(match file {
        Some(path) => dbe_services::config_store::ConfigFile::open(path, cfg.clone())
            .with_context(|| format!("reading {}", path.display()))?,
        None => dbe_services::config_store::ConfigFile::in_memory(cfg.clone()),
    });
    let changes = ConfigChanges { rx: store.subscribe(), reload: file.is_some() };
    let notes = handle.clone();
    let services = crate::services::start(&cfg, handle, Some(store)).await?;
    if let Some(url) = &services.web_url {
        eprintln!("dbe: dashboard at {url}");
    }
    let record_dir = record.or_else(|| (!cfg.record.dir.is_empty()).then(|| cfg.record.dir.clone().into()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut recorder = None;
    if let Some(dir) = record_dir {
        let rcfg = crate::recorder::RecorderConfig {
            dir,
            max_file: cfg.record.max_file_mb as u64 * 1024 * 1024,
            max_total: cfg.record.max_total_mb as u64 * 1024 * 1024,
        };
        let sources = ports
            .record_names()
            .into_iter()
            .map(|(name, p)| crate::recorder::Source { name: name.to_string(), rx: p.subscribe_traffic() })
            .collect();
        let (state_tx, mut state_rx) = tokio::sync::watch::channel(crate::recorder::RecorderState::Stopped);
        tokio::spawn(async move {
            while state_rx.changed().await.is_ok() {
                let state = state_rx.borrow_and_update().clone();
                let failed = match &state {
                    crate::recorder::RecorderState::Recording { file } => {
                        tracing::info!("recording to {}", file.display());
                        false
                    }
                    crate::recorder::RecorderState::Failed(e) => {
                        tracing::error!("{e}");
                        true
                    }
                    crate::recorder::RecorderState::Stopped => continue,
                };
                let note = Request::Note { kind: EventKind::RecordingFailed, active: failed, data: 0 };
                let _ = notes.request(note, "recorder").await;
            }
        });
        recorder = Some(
            crate::recorder::spawn_thread(rcfg, clock, sources, state_tx, stop_rx)
                .context("starting the recorder's thread")?,
        );
    }
    let _tap: Vec<AbortOnDrop> = match &services.frames {
        Some(tap) => {
            let ports = ports.record_names().into_iter().map(|(n, p)| (n, p.subscribe_traffic())).collect();
            crate::services::tap_ports(tap, ports, clock).into_iter().map(AbortOnDrop).collect()
        }
        None => Vec::new(),
    };
    tracing::info!(battery = %cfg.battery.port, inverter = %cfg.inverter.port, "bridging {} to {}", cfg.battery.kind, cfg.inverter.protocol);
    if let dbe_core::battery::BatteryConfig::NissanLeaf(o) = crate::options::battery_config(&cfg) {
        if o.interlock == dbe_core::battery::nissan_leaf::InterlockPolicy::WarnOnly {
            tracing::warn!(
                "battery.nissan_leaf.interlock = \"warn\": an open HV interlock will not stop the pack, ZE0 included"
            );
        }
    }
    let (state, latches) = match crate::state::dir(&cfg.state.dir) {
        Some(dir) => {
            let (file, loaded) = crate::state::StateFile::load(&dir);
            match &loaded {
                crate::state::Loaded::Fresh => tracing::info!(path = %file.path().display(), "no state file yet"),
                crate::state::Loaded::Restored(l) if *l != Default::default() => {
                    tracing::warn!(path = %file.path().display(), "latched from before: {l:?}; only Start clears it")
                }
                crate::state::Loaded::Restored(_) => {}
                crate::state::Loaded::Unreadable(why) => {
                    tracing::error!("state file unreadable ({why}): starting stopped until Start")
                }
            }
            let latches = loaded.latches();
            (Some(file), latches)
        }
        None => {
            tracing::warn!(
                "no state directory (state.dir, or systemd's StateDirectory): a stop and the critical latches are \
                 lost when DBE restarts"
            );
            (None, Default::default())
        }
    };
    let opts = LoopOptions {
        autostart: cfg.autostart,
        print_json,
        state,
        latches,
        outputs,
        equipment_stop_latching: cfg.contactors.equipment_stop_latching,
    };
    let result = bridge_loop(bridge_config(&cfg), opts, ports, clock, end, Some(changes), shutdown_signal()).await;
    let _ = stop_tx.send(true);
    if let Some(r) = recorder {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), tokio::task::spawn_blocking(|| r.join())).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbe_core::CanFrame;
    use tokio::sync::broadcast;

    fn rcv(id: u16, at_us: u64) -> Received {
        Received { frame: CanFrame::standard(id, &[]).unwrap(), at_ms: at_us / 1000, at_us }
    }

    fn taken(out: &[Arrived]) -> Vec<(Port, u16)> {
        out.iter().map(|a| (a.port, a.rcv.frame.standard_id().unwrap())).collect()
    }

    #[test]
    fn gather_takes_both_ports_in_the_order_they_were_read() {
        let (btx, mut brx) = broadcast::channel(GATHER_MAX * 2);
        let (itx, irx) = broadcast::channel(GATHER_MAX * 2);
        let mut irx = Some(irx);
        // The inverter's poll woke the loop; the battery had read two frames before it, in the same µs.
        for r in [rcv(0x1DB, 10), rcv(0x1DC, 10), rcv(0x1DD, 30)] {
            btx.send(r).unwrap();
        }
        itx.send(rcv(0x306, 40)).unwrap();
        let mut out = Vec::with_capacity(GATHER_MAX);
        gather((Port::Inverter, rcv(0x305, 20)), &mut brx, &mut irx, &mut out).unwrap();
        use Port::{Battery as B, Inverter as I};
        assert_eq!(taken(&out), [(B, 0x1DB), (B, 0x1DC), (I, 0x305), (B, 0x1DD), (I, 0x306)]);

        // A burst all in one µs keeps each port's order (and the order taken between them).
        for i in 0..100 {
            btx.send(rcv(i, 50)).unwrap();
            itx.send(rcv(0x400 + i, 50)).unwrap();
        }
        let capacity = out.capacity();
        gather((Port::Battery, rcv(0x7FF, 50)), &mut brx, &mut irx, &mut out).unwrap();
        let ids: Vec<u16> = out.iter().map(|a| a.rcv.frame.standard_id().unwrap()).collect();
        let expected: Vec<u16> = std::iter::once(0x7FF).chain(0..100).chain(0x400..0x464).collect();
        assert_eq!(ids, expected);
        // No more than GATHER_MAX in one turn (the rest wait for the next), in the same buffer.
        for i in 0..GATHER_MAX as u16 + 10 {
            btx.send(rcv(i, 60)).unwrap();
        }
        gather((Port::Inverter, rcv(0x300, 60)), &mut brx, &mut irx, &mut out).unwrap();
        assert_eq!(out.len(), GATHER_MAX);
        assert_eq!(out.capacity(), capacity, "the buffer is reused, never grown");
    }
}
