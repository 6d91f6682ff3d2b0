//! Relay outputs and inputs on a GPIO chip, through the Linux GPIO character device (`/dev/gpiochipN`, uAPI v2;
//! no sysfs).
//!
//! Facts and their sources: the uAPI v2 structs and ioctls (`GPIO_V2_GET_LINE_IOCTL` with `struct
//! gpio_v2_line_request`, `GPIO_V2_LINE_SET_VALUES_IOCTL` / `GET_VALUES` with `struct gpio_v2_line_values`, the
//! `GPIO_V2_LINE_FLAG_*` bits, at most 10 config attributes and 64 lines per request) are the kernel's
//! `include/uapi/linux/gpio.h`, as exposed by the `gpiocdev-uapi` crate. Values in uAPI v2 are logical: with
//! `ACTIVE_LOW` an active line is driven low, so "off" is always the inactive value whatever the wiring.
//!
//! All lines are held in one request for the life of the device. The request is built by [`line_request`] from
//! the resolved offsets, a pure function the tests pin field by field: outputs as `OUTPUT` (with `ACTIVE_LOW`
//! where configured) and requested at their inactive value, so opening the device never closes a relay, not even
//! for a moment; inputs as `INPUT` biased so that an open circuit reads inactive (pulled down, or pulled up when
//! active-low), which is what makes a normally-closed equipment stop stop on a broken wire. A chip that cannot
//! bias ignores it (the kernel treats bias as optional): fit the resistor too (README).
//!
//! A GPIO output cannot be read back in any useful way: reading the line returns what the kernel drives, not
//! whether the relay moved. [`GpioDevice`] therefore reports no read-back (`None`), and says so.

use std::fs::File;

use gpiocdev_uapi::v2::{self, LineFlags, LineRequest, LineValues};
use gpiocdev_uapi::NUM_LINES_MAX;

use super::{DeviceError, Input, Levels, Output, OutputSet, RelayDevice};
use dbe_services::contactors::LineRef;

/// The consumer label the kernel shows for DBE's lines (`gpioinfo`).
pub const CONSUMER: &str = "dbe";

/// The configured lines, by offset or name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpioConfig {
    pub chip: String,
    pub outputs: [Option<LineRef>; Output::COUNT],
    pub inputs: [Option<LineRef>; Input::COUNT],
    pub active_low: bool,
    pub inputs_active_low: bool,
}

/// The lines after name resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offsets {
    pub outputs: [Option<u32>; Output::COUNT],
    pub inputs: [Option<u32>; Input::COUNT],
}

/// Where each output and input sits in the request (the index is its bit in `LineValues`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    pub outputs: [Option<usize>; Output::COUNT],
    pub inputs: [Option<usize>; Input::COUNT],
}

/// Resolves names to offsets with `chip_lines` (each line's offset and name on the chip) and checks every
/// offset is on the chip.
pub fn resolve(cfg: &GpioConfig, chip_lines: &[(u32, String)]) -> Result<Offsets, String> {
    let find = |l: &LineRef| -> Result<u32, String> {
        match l {
            LineRef::Offset(n) if chip_lines.iter().any(|(o, _)| o == n) => Ok(*n),
            LineRef::Offset(n) => Err(format!("{} has no line {n} (it has {})", cfg.chip, chip_lines.len())),
            LineRef::Name(name) => chip_lines
                .iter()
                .find(|(_, n)| n == name)
                .map(|(o, _)| *o)
                .ok_or_else(|| format!("{} has no line named \"{name}\" (see gpioinfo)", cfg.chip)),
        }
    };
    let mut outputs = [None; Output::COUNT];
    for (slot, l) in outputs.iter_mut().zip(&cfg.outputs) {
        *slot = l.as_ref().map(find).transpose()?;
    }
    let mut inputs = [None; Input::COUNT];
    for (slot, l) in inputs.iter_mut().zip(&cfg.inputs) {
        *slot = l.as_ref().map(find).transpose()?;
    }
    Ok(Offsets { outputs, inputs })
}

/// The uAPI v2 request for every line: outputs first (in [`Output`] order), then inputs.
pub fn line_request(offsets: &Offsets, active_low: bool, inputs_active_low: bool) -> (LineRequest, Layout) {
    let mut req = LineRequest::default();
    let mut layout = Layout::default();
    let mut all: Vec<u32> = Vec::new();
    for (slot, o) in layout.outputs.iter_mut().zip(offsets.outputs) {
        *slot = o.map(|o| {
            all.push(o);
            all.len() - 1
        });
    }
    for (slot, o) in layout.inputs.iter_mut().zip(offsets.inputs) {
        *slot = o.map(|o| {
            all.push(o);
            all.len() - 1
        });
    }
    debug_assert!(all.len() <= NUM_LINES_MAX);
    req.offsets.copy_from_slice(&all);
    req.num_lines = all.len() as u32;
    req.consumer = CONSUMER.into();
    let mask = |idx: &[Option<usize>]| idx.iter().flatten().fold(0u64, |m, &i| m | (1 << i));
    let out_mask = mask(&layout.outputs);
    let in_mask = mask(&layout.inputs);
    let out_flags = if active_low { LineFlags::OUTPUT | LineFlags::ACTIVE_LOW } else { LineFlags::OUTPUT };
    // An open circuit must read inactive: pulled to the inactive level.
    let in_flags = if inputs_active_low {
        LineFlags::INPUT | LineFlags::ACTIVE_LOW | LineFlags::BIAS_PULL_UP
    } else {
        LineFlags::INPUT | LineFlags::BIAS_PULL_DOWN
    };
    // The default flags are the outputs'; inputs get an attribute of their own.
    req.config.flags = out_flags;
    if in_mask != 0 {
        req.config.add_flags(in_flags, in_mask);
    }
    if out_mask != 0 {
        // Requested at their inactive value: the request itself never energises a relay.
        req.config.add_values(&LineValues { bits: 0, mask: out_mask });
    }
    (req, layout)
}

/// The values to write to set one output.
pub fn set_values(layout: &Layout, output: Output, on: bool) -> Option<LineValues> {
    let idx = layout.outputs[output.index()]?;
    let mut v = LineValues::default();
    v.set(idx, on);
    Some(v)
}

/// The values to write to open every output at once.
pub fn all_off(layout: &Layout) -> LineValues {
    let mut v = LineValues::default();
    for idx in layout.outputs.iter().flatten() {
        v.set(*idx, false);
    }
    v
}

/// The mask to read every input with.
pub fn input_query(layout: &Layout) -> LineValues {
    let mut v = LineValues::default();
    for idx in layout.inputs.iter().flatten() {
        v.set(*idx, false);
    }
    v
}

fn os_error(what: &str, chip: &str, e: gpiocdev_uapi::Error) -> DeviceError {
    let busy = matches!(&e, gpiocdev_uapi::Error::Os(errno) if errno.0 == libc::EBUSY);
    let hint = if busy { " (another program holds the line: a running `dbe run`? see gpioinfo)" } else { "" };
    DeviceError::Io(format!("{chip}: {what}: {e}{hint}"))
}

/// The lines of one chip, held for the life of the device.
pub struct GpioDevice {
    chip: String,
    request: File,
    layout: Layout,
}

impl GpioDevice {
    /// Opens the chip, resolves line names, and requests every line (outputs at their open value).
    pub fn open(cfg: &GpioConfig) -> Result<GpioDevice, DeviceError> {
        let chip = File::options()
            .read(true)
            .write(true)
            .open(&cfg.chip)
            .map_err(|e| DeviceError::Io(format!("cannot open {}: {e}", cfg.chip)))?;
        let info = v2::get_chip_info(&chip).map_err(|e| os_error("not a GPIO chip", &cfg.chip, e))?;
        let mut lines = Vec::with_capacity(info.num_lines as usize);
        for offset in 0..info.num_lines {
            let li = v2::get_line_info(&chip, offset).map_err(|e| os_error("reading line info", &cfg.chip, e))?;
            lines.push((offset, String::from(&li.name)));
        }
        let offsets = resolve(cfg, &lines).map_err(DeviceError::Io)?;
        let (req, layout) = line_request(&offsets, cfg.active_low, cfg.inputs_active_low);
        let request = v2::get_line(&chip, req).map_err(|e| os_error("requesting the lines", &cfg.chip, e))?;
        Ok(GpioDevice { chip: cfg.chip.clone(), request, layout })
    }

    fn write(&self, v: &LineValues) -> Result<(), DeviceError> {
        if v.mask == 0 {
            return Ok(());
        }
        v2::set_line_values(&self.request, v).map_err(|e| os_error("setting lines", &self.chip, e))
    }
}

impl RelayDevice for GpioDevice {
    fn outputs(&self) -> OutputSet {
        OutputSet::from_fn(|o| self.layout.outputs[o.index()].is_some())
    }

    fn inputs(&self) -> [bool; Input::COUNT] {
        self.layout.inputs.map(|i| i.is_some())
    }

    fn can_read_back(&self) -> bool {
        false
    }

    async fn set(&mut self, output: Output, on: bool) -> Result<(), DeviceError> {
        match set_values(&self.layout, output, on) {
            Some(v) => self.write(&v),
            None => Ok(()),
        }
    }

    async fn open_all(&mut self) -> Result<(), DeviceError> {
        self.write(&all_off(&self.layout))
    }

    async fn read_back(&mut self) -> Result<Levels, DeviceError> {
        Ok([None; Output::COUNT])
    }

    async fn read_inputs(&mut self) -> Result<[Option<bool>; Input::COUNT], DeviceError> {
        let mut v = input_query(&self.layout);
        if v.mask == 0 {
            return Ok([None; Input::COUNT]);
        }
        v2::get_line_values(&self.request, &mut v).map_err(|e| os_error("reading lines", &self.chip, e))?;
        Ok(self.layout.inputs.map(|i| i.and_then(|i| v.get(i))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpiocdev_uapi::v2::LineAttributeValue;

    fn chip() -> Vec<(u32, String)> {
        (0..28).map(|o| (o, format!("GPIO{o}"))).collect()
    }

    fn config() -> GpioConfig {
        GpioConfig {
            chip: "/dev/gpiochip0".into(),
            // negative, precharge, positive, bms_power
            outputs: [Some(LineRef::Offset(5)), Some(LineRef::Name("GPIO6".into())), Some(LineRef::Offset(13)), None],
            inputs: [Some(LineRef::Name("GPIO26".into())), None],
            active_low: true,
            inputs_active_low: true,
        }
    }

    #[test]
    fn names_resolve_to_offsets_and_missing_lines_are_named() {
        let o = resolve(&config(), &chip()).unwrap();
        assert_eq!(o.outputs, [Some(5), Some(6), Some(13), None]);
        assert_eq!(o.inputs, [Some(26), None]);
        let mut bad = config();
        bad.outputs[3] = Some(LineRef::Name("RELAY4".into()));
        assert!(resolve(&bad, &chip()).unwrap_err().contains("no line named \"RELAY4\""));
        bad.outputs[3] = Some(LineRef::Offset(40));
        assert!(resolve(&bad, &chip()).unwrap_err().contains("has no line 40"));
    }

    #[test]
    fn the_request_holds_outputs_open_and_biases_inputs_towards_stop() {
        let o = resolve(&config(), &chip()).unwrap();
        let (req, layout) = line_request(&o, true, true);
        assert_eq!(req.num_lines, 4);
        assert_eq!(&req.offsets.0[..4], &[5, 6, 13, 26]);
        assert_eq!(String::from(&req.consumer), "dbe");
        assert_eq!(layout.outputs, [Some(0), Some(1), Some(2), None]);
        assert_eq!(layout.inputs, [Some(3), None]);
        assert_eq!(req.config.flags, LineFlags::OUTPUT | LineFlags::ACTIVE_LOW);
        assert_eq!(req.config.num_attrs, 2);
        let a0 = req.config.attr(0);
        assert_eq!(a0.mask, 0b1000);
        assert_eq!(
            a0.attr.to_value(),
            Some(LineAttributeValue::Flags(LineFlags::INPUT | LineFlags::ACTIVE_LOW | LineFlags::BIAS_PULL_UP))
        );
        let a1 = req.config.attr(1);
        assert_eq!(a1.mask, 0b0111, "every output has a requested value");
        assert_eq!(a1.attr.to_value(), Some(LineAttributeValue::Values(0)), "all inactive = open");
        assert!(req.padding.is_zeroed() && req.config.padding.is_zeroed());
    }

    #[test]
    fn active_high_outputs_and_inputs_pulled_down() {
        let o = Offsets { outputs: [Some(17), None, Some(27), Some(22)], inputs: [None, Some(4)] };
        let (req, layout) = line_request(&o, false, false);
        assert_eq!(&req.offsets.0[..4], &[17, 27, 22, 4]);
        assert_eq!(req.config.flags, LineFlags::OUTPUT);
        assert_eq!(
            req.config.attr(0).attr.to_value(),
            Some(LineAttributeValue::Flags(LineFlags::INPUT | LineFlags::BIAS_PULL_DOWN))
        );
        assert_eq!(req.config.attr(0).mask, 0b1000);
        assert_eq!(layout.outputs, [Some(0), None, Some(1), Some(2)]);
        // Only outputs, no inputs: one attribute (the values).
        let (req, _) =
            line_request(&Offsets { outputs: [Some(1), None, Some(2), None], inputs: [None; 2] }, false, false);
        assert_eq!(req.config.num_attrs, 1);
        assert_eq!(req.config.attr(0).mask, 0b11);
    }

    #[test]
    fn set_values_touch_only_their_line() {
        let layout = Layout { outputs: [Some(0), Some(1), Some(2), None], inputs: [Some(3), None] };
        let v = set_values(&layout, Output::Positive, true).unwrap();
        assert_eq!((v.bits, v.mask), (0b100, 0b100));
        let v = set_values(&layout, Output::Negative, false).unwrap();
        assert_eq!((v.bits, v.mask), (0, 0b001));
        assert_eq!(set_values(&layout, Output::BmsPower, true), None);
        let v = all_off(&layout);
        assert_eq!((v.bits, v.mask), (0, 0b111), "inputs are not written");
        let v = input_query(&layout);
        assert_eq!(v.mask, 0b1000);
    }

    #[test]
    fn a_missing_chip_is_a_clear_error() {
        let cfg = GpioConfig { chip: "/dev/gpiochip-none".into(), ..config() };
        let e = GpioDevice::open(&cfg).err().unwrap().to_string();
        assert!(e.contains("cannot open /dev/gpiochip-none"), "{e}");
    }
}
