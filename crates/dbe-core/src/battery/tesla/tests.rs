//! Byte vectors (each expected value's source named), emitted frames pinned to Battery-Emulator's templates and
//! opendbc's checksum, the chemistry confirmation, the power-state sequence and the contactor faults.

use super::*;
use proptest::prelude::*;

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn model_for(o: TeslaModel3Options) -> BatteryModel {
    BatteryModel::new(o.chemistry.design()).with_extras(EXTRAS)
}

fn model() -> BatteryModel {
    model_for(TeslaModel3Options::default())
}

fn f8(id: u16, d: [u8; 8]) -> CanFrame {
    CanFrame::std8(id, d)
}

#[test]
fn every_counted_template_reproduces_battery_emulators_bytes() {
    // TESLA-BATTERY.h templates: with their own counter, opendbc's sum gives BE's checksum byte.
    for spec in COUNTED.iter().chain([&UI_REQUEST]) {
        let f = spec.frame(spec.first_counter());
        assert_eq!(f.data(), &spec.template[..spec.len], "{:#x}", spec.id);
    }
    // BE's 0x2E8 template is the one exception: it carries 0x6C, the sum is 0x7C.
    assert_eq!(tesla_checksum(0x2E8, &[0x02, 0, 0x10, 0, 0, 0x80, 0, 0x6C], 7), 0x7C);
    // 0x334's initial frame is consistent too.
    assert_eq!(tesla_checksum(0x334, &UI_REQUEST_INITIAL, 7), UI_REQUEST_INITIAL[7]);
    // The next 0x118 (counter 1): byte 0 one more, byte 1 0x61.
    assert_eq!(DI_SYSTEM_STATUS.frame(1).data(), &[0xAC, 0x61, 0x2A, 0, 0, 0x08, 0, 0]);
    // Counters wrap at their width: 4 bits for 0x118, 3 bits for 0x1CF.
    assert_eq!(DI_SYSTEM_STATUS.next(15), 0);
    assert_eq!(DIGITAL_HVIL.next(7), 0);
}

#[test]
fn lv_power_state_0x221_matches_all_eight_templates() {
    // BE: mux 0 templates carry counter 15, mux 1 templates counter 0; byte 7 is their checksum.
    for state in [PowerState::Drive, PowerState::Accessory, PowerState::GoingDown, PowerState::Off] {
        let [m0, m1] = state.templates();
        assert_eq!(lv_power_state(state, 0, 15).data(), &m0, "{state:?} mux 0");
        assert_eq!(lv_power_state(state, 1, 0).data(), &m1, "{state:?} mux 1");
    }
    // The power state field (5|2, party DBC): DRIVE 3, ACCESSORY 2, OFF 0.
    let ps = |s| bits(lv_power_state(s, 0, 0).data8(), 5, 2);
    assert_eq!((ps(PowerState::Drive), ps(PowerState::Accessory), ps(PowerState::Off)), (3, 2, 0));
    // Counter 3 on DRIVE mux 1: byte 6 = 0x30, byte 7 = sum.
    let f = lv_power_state(PowerState::Drive, 1, 3);
    assert_eq!(f.data()[6], 0x30);
    assert_eq!(f.data()[7], tesla_checksum(0x221, f.data(), 7));
}

#[test]
fn sccm_0x229_crc_reproduces_battery_emulators_table() {
    // BE `generateTESLA_229` checksumLookup, indexed by the counter.
    const BE: [u8; 16] =
        [0x46, 0x44, 0x52, 0x6D, 0x43, 0x41, 0xDD, 0xF9, 0x4C, 0xA5, 0xF6, 0x8C, 0x49, 0x2F, 0x31, 0x3B];
    for (c, crc) in BE.into_iter().enumerate() {
        assert_eq!(sccm_right_stalk(c as u8).data(), &[crc, c as u8, 0x00], "counter {c}");
    }
}

#[test]
fn vehicle_status_0x3a1_reproduces_battery_emulators_sixteen_frames() {
    // BE `frame6_3A1` / `frame7_3A1`, payloads alternating from the "C3 FF FF FF 3D 00" one.
    const B6: [u8; 16] =
        [0xD0, 0xE2, 0xF0, 0x02, 0x10, 0x22, 0x30, 0x42, 0x50, 0x62, 0x70, 0x82, 0x90, 0xA2, 0xB0, 0xC2];
    const B7: [u8; 16] =
        [0x01, 0xCB, 0x21, 0xEB, 0x41, 0x0B, 0x61, 0x2B, 0x81, 0x4B, 0xA1, 0x6B, 0xC1, 0x8B, 0xE1, 0xAB];
    for i in 0..16u8 {
        let f = vehicle_status(i);
        let d = f.data();
        let payload: &[u8] =
            if i % 2 == 0 { &[0xC3, 0xFF, 0xFF, 0xFF, 0x3D, 0x00] } else { &[0x08, 0x62, 0x0B, 0x18, 0x00, 0x28] };
        assert_eq!(&d[..6], payload);
        assert_eq!((d[6], d[7]), (B6[i as usize], B7[i as usize]), "step {i}");
    }
}

#[test]
fn digital_hvil_frames_reproduce_battery_emulators_tables() {
    // BE `content_118_digital_hvil` (bytes 0-1) and `content_1CF_digital_hvil` (bytes 6-7, from counter 3).
    for i in 0..16u8 {
        let d = DI_SYSTEM_STATUS_DIGITAL_HVIL.frame(i);
        assert_eq!((d.data()[0], d.data()[1]), (0x61 + i, 0x80 + i));
    }
    let be_1cf: [u16; 8] = [0x6069, 0x8089, 0xA0A9, 0xC0C9, 0xE0E9, 0x0009, 0x2029, 0x4049];
    for (i, v) in be_1cf.into_iter().enumerate() {
        let d = DIGITAL_HVIL.frame((3 + i as u8) & 7);
        assert_eq!(u16::from_be_bytes([d.data()[6], d.data()[7]]), v, "index {i}");
    }
}

#[test]
fn hv_bus_0x132() {
    // DBC BattVoltage132 0|16 0.01 V: 37030 → 370.30 V → 3703 dV (BE's example). SmoothBattCurrent 16|16: BE's
    // examples 225 (22.5 A) and 65492 (BE's comment says -4.3 A; as i16 it is -44 dA, within BE's one LSB).
    // ChargeHoursRemaining 48|12: 228 min; 4095 = none.
    let v = 37030u16.to_le_bytes();
    let f = HvBus::parse(&[v[0], v[1], 225, 0, 0, 0, 228, 0]);
    assert_eq!(f, HvBus { voltage: DeciVolts(3703), current: DeciAmps(225), charge_minutes_remaining: Some(228) });
    let i = 65492u16.to_le_bytes();
    let f = HvBus::parse(&[v[0], v[1], i[0], i[1], 0, 0, 0xFF, 0x0F]);
    assert_eq!((f.current, f.charge_minutes_remaining), (DeciAmps(-44), None));
}

#[test]
fn soc_status_0x292() {
    // DBC: min 0|10, UI 10|10, max 20|10, ave 30|10 (0.1 %), BOL energy 40|10 (0.1 kWh).
    let mut d = [0u8; 8];
    set_bits(&mut d, 0, 10, 501);
    set_bits(&mut d, 10, 10, 482);
    set_bits(&mut d, 20, 10, 515);
    set_bits(&mut d, 30, 10, 508);
    set_bits(&mut d, 40, 10, 785);
    assert_eq!(SocStatus::parse(&d), SocStatus { min: 501, ui: 482, max: 515, ave: 508, beginning_of_life: 785 });
    // Hand-assembled bytes (BE's shifts): soc_min = (d1 & 3) << 8 | d0 = 501 → d0 0xF5, d1 low bits 1.
    assert_eq!(d[0], 0xF5);
    let mut tesla = TeslaModel3::new();
    let mut m = model();
    tesla.handle_frame(t(0), &f8(0x292, d), &mut m).unwrap();
    assert_eq!(m.soc, Some(Reading::new(BasisPoints(4820), t(0))), "the UI SOC feeds the model");
    assert_eq!(m.extras.number(extra::SOC_MIN), Some(501));
}

#[test]
fn brick_min_max_0x332_both_multiplexes() {
    // Mux 0 (BE): temperatures 0.5 °C, -40: BE's example 0x61 → 8.5 °C; sensor numbers 2|4 and 8|4.
    let d = [5 << 2, 0x03, 0x61, 0x50, 0x64, 0x5A, 0, 0]; // mux 0, max sensor 5
    assert_eq!(
        BrickMinMax::parse(&d),
        BrickMinMax::Temperatures {
            max: DeciCelsius(85),
            min: DeciCelsius(0),
            max_sensor: 5,
            min_sensor: 3,
            model_max: DeciCelsius(100),
            model_min: DeciCelsius(50),
        }
    );
    // Mux 1: max 2|12 and min 16|12 at 2 mV; numbers 32|7 and 40|7, +1. 4100 mV = 2050, 4090 mV = 2045.
    let mut d = [0u8; 8];
    set_bits(&mut d, 0, 2, 1);
    set_bits(&mut d, 2, 12, 2050);
    set_bits(&mut d, 16, 12, 2045);
    set_bits(&mut d, 32, 7, 41);
    set_bits(&mut d, 40, 7, 7);
    assert_eq!(
        BrickMinMax::parse(&d),
        BrickMinMax::Voltages { max: MilliVolts(4100), min: MilliVolts(4090), max_brick: 42, min_brick: 8 }
    );
    // The frame is 6 bytes (DBC) and decodes into the model's temperatures.
    let mut tesla = TeslaModel3::new();
    let mut m = model();
    let f = CanFrame::standard(0x332, &[0x14, 0x03, 0x61, 0x50, 0x64, 0x5A]).unwrap();
    assert_eq!(tesla.handle_frame(t(7), &f, &mut m), Ok(FrameUse::Used));
    assert_eq!(m.temperature_max, Some(Reading::new(DeciCelsius(85), t(7))));
    assert_eq!(m.temperature_min, Some(Reading::new(DeciCelsius(0), t(7))));
}

#[test]
fn drive_limits_0x2d2_and_power_available_0x252() {
    // DBC: min 0|16 and max 16|16 at 0.01 V (BE's examples 24148 → 241.48 V, 40282 → 402.82 V), charge 32|14 at
    // 0.1 A, discharge 48|14 at 0.128 A (430 → 55.04 A → 550 dA).
    let mut d = [0u8; 8];
    set_bits(&mut d, 0, 16, 24148);
    set_bits(&mut d, 16, 16, 40282);
    set_bits(&mut d, 32, 14, 1301);
    set_bits(&mut d, 48, 14, 430);
    assert_eq!(
        DriveLimits::parse(&d),
        DriveLimits {
            min_voltage: DeciVolts(2414),
            max_voltage: DeciVolts(4028),
            max_charge_current: DeciAmps(1301),
            max_discharge_current: DeciAmps(550),
        }
    );
    // 0x252: regen 0|16 and discharge 16|16 at 0.01 kW (BE's example 4715 → 47.15 kW), state 48|1.
    let mut p = [0u8; 8];
    set_bits(&mut p, 0, 16, 4715);
    set_bits(&mut p, 16, 16, 2009);
    set_bits(&mut p, 48, 1, 1);
    assert_eq!(
        PowerAvailable::parse(&p),
        PowerAvailable { max_regen: Watts(47_150), max_discharge: Watts(20_090), calculated: true }
    );
    let mut tesla = TeslaModel3::new();
    let mut m = model();
    tesla.handle_frame(t(0), &f8(0x2D2, d), &mut m).unwrap();
    tesla.handle_frame(t(0), &f8(0x252, p), &mut m).unwrap();
    assert_eq!(m.bms_charge_current.unwrap().value, DeciAmps(1301));
    assert_eq!(m.max_charge_power.unwrap().value, Watts(47_150));
    // Not calculated for drive: the model holds no power limit.
    set_bits(&mut p, 48, 1, 0);
    tesla.handle_frame(t(1), &f8(0x252, p), &mut m).unwrap();
    assert_eq!((m.max_charge_power, m.max_discharge_power), (None, None));
}

#[test]
fn bms_status_0x212_and_hvp_0x20a() {
    // DBC: contactor 8|3, hv state 16|3, isolation 19|10 (10 kΩ), BMS state 32|4.
    let mut d = [0u8; 8];
    set_bits(&mut d, 8, 3, 4);
    set_bits(&mut d, 16, 3, 3);
    set_bits(&mut d, 19, 10, 500);
    set_bits(&mut d, 32, 4, 1);
    let s = BmsStatusFrame::parse(&d);
    assert_eq!((s.contactors, s.hv_state, s.isolation_kohm, s.state), (ContactorState::Closed, 3, 5000, 1));
    assert_eq!((s.state_name(), s.hv_state_name(), s.bms_status()), ("DRIVE", "UP_FOR_DRIVE", BmsStatus::Active));
    set_bits(&mut d, 32, 4, 6);
    assert_eq!(BmsStatusFrame::parse(&d).bms_status(), BmsStatus::Fault);
    // 0x20A (BE/DBC): negative 0|3, positive 3|3, set state 8|4, open now 33, open 34, allowed 35, pyro 37, HVIL
    // 40|4 (1 STATUS_OK).
    let mut h = [0u8; 8];
    set_bits(&mut h, 0, 3, 6);
    set_bits(&mut h, 3, 3, 4);
    set_bits(&mut h, 8, 4, 5);
    set_bits(&mut h, 35, 1, 1);
    set_bits(&mut h, 40, 4, 1);
    let v = HvpContactors::parse(&h);
    assert_eq!((v.negative, v.positive, v.set_state, v.hvil), (6, 4, 5, 1));
    assert!(v.closing_allowed && !v.open_requested && !v.open_now_requested && !v.pyro_test);
    let mut tesla = TeslaModel3::new();
    let mut m = model();
    let frame = CanFrame::standard(0x20A, &h[..6]).unwrap();
    tesla.handle_frame(t(0), &frame, &mut m).unwrap();
    assert!(!m.faults.contains(BmsFaults::HVIL_OPEN));
    set_bits(&mut h, 40, 4, 3); // INTERNAL_OPEN_FAULT
    set_bits(&mut h, 33, 1, 1);
    tesla.handle_frame(t(1), &CanFrame::standard(0x20A, &h[..6]).unwrap(), &mut m).unwrap();
    assert!(m.faults.contains(BmsFaults::HVIL_OPEN));
    assert!(m.requests.contains(BmsRequests::OPEN_RELAYS));
    assert_eq!(m.extras.text(extra::HVIL), Some("INTERNAL_OPEN_FAULT"));
}

#[test]
fn energy_status_0x352_both_layouts() {
    // Flat (DBC): full 0|11 = 752 (BE's example, 75.2 kWh), remaining 11|11 = 622, expected 22|11 = 600, ideal
    // 33|11 = 311, to charge 44|11 = 147, buffer 55|8 = 30, full 63.
    let mut d = [0u8; 8];
    for (start, len, v) in [(0, 11, 752), (11, 11, 622), (22, 11, 600), (33, 11, 311), (44, 11, 147), (55, 8, 30)] {
        set_bits(&mut d, start, len, v);
    }
    let e = Energies::parse_flat(&d);
    assert_eq!((e.nominal_full, e.nominal_remaining, e.expected_remaining), (Some(7520), Some(6220), Some(6000)));
    assert_eq!((e.ideal_remaining, e.to_charge_complete, e.buffer), (Some(3110), Some(1470), Some(300)));
    assert_eq!(e.full_charge_complete, Some(false));
    // An old BMS (the low two bits of 752 are 0, always): flat after six frames; no energy before.
    let mut tesla = TeslaModel3::new();
    let mut m = model();
    for i in 0..5 {
        tesla.handle_frame(t(i * 1000), &f8(0x352, d), &mut m).unwrap();
        assert_eq!(m.total_energy, None, "frame {i}");
    }
    tesla.handle_frame(t(5000), &f8(0x352, d), &mut m).unwrap();
    assert_eq!(m.total_energy.unwrap().value, WattHours(75_200));
    assert_eq!(m.remaining_energy.unwrap().value, WattHours(62_200));
    // 2021+ (BE): mux 0 full 16|16 = 3760 × 0.02 = 75.2 kWh; mux 1 buffer 16|16 × 0.01, expected 32|16 × 0.02.
    let mut m0 = [0u8; 8];
    set_bits(&mut m0, 16, 16, 3760);
    set_bits(&mut m0, 32, 16, 3110);
    let mut m1 = [1u8, 0, 0, 0, 0, 0, 0, 0];
    set_bits(&mut m1, 16, 16, 300);
    set_bits(&mut m1, 32, 16, 3000);
    let mut tesla = TeslaModel3::new();
    let mut m = model();
    tesla.handle_frame(t(0), &f8(0x352, m0), &mut m).unwrap();
    assert_eq!(m.total_energy, None);
    tesla.handle_frame(t(1000), &f8(0x352, m1), &mut m).unwrap();
    assert_eq!(m.extras.text(extra::ENERGY_LAYOUT), Some("2021+ multiplexed"));
    assert_eq!(m.extras.number(extra::BUFFER), Some(300));
    assert_eq!(m.extras.number(extra::EXPECTED_REMAINING), Some(6000));
    tesla.handle_frame(t(2000), &f8(0x352, m0), &mut m).unwrap();
    assert_eq!(m.total_energy.unwrap().value, WattHours(75_200));
    assert_eq!(m.remaining_energy.unwrap().value, WattHours(62_200));
}

#[test]
fn kwh_counter_0x3d2_alerts_0x320_and_12v_0x7aa() {
    let mut tesla = TeslaModel3::new();
    let mut m = model();
    // DBC: discharge 0|32, charge 32|32, 0.001 kWh.
    let mut d = [0u8; 8];
    d[..4].copy_from_slice(&12_345_678u32.to_le_bytes());
    d[4..].copy_from_slice(&13_000_000u32.to_le_bytes());
    tesla.handle_frame(t(0), &f8(0x3D2, d), &mut m).unwrap();
    assert_eq!(m.extras.number(extra::TOTAL_DISCHARGED), Some(12_345_678));
    assert_eq!(m.extras.number(extra::TOTAL_CHARGED), Some(13_000_000));
    // 0x320 mux 0 bit 20 (BE `BMS_a017_SW_Brick_OV`) and bit 38 (`a035_SW_Isolation`).
    let mut a = [0u8; 8];
    set_bits(&mut a, 20, 1, 1);
    set_bits(&mut a, 38, 1, 1);
    tesla.handle_frame(t(1), &f8(0x320, a), &mut m).unwrap();
    assert_eq!(m.faults, BmsFaults::CELL_OVERVOLTAGE | BmsFaults::ISOLATION);
    // Mux 2 bit 62 (`a179_SW_Hvp_12V_Fault`) adds to mux 0's; mux 0 clearing leaves mux 2's.
    let mut a2 = [2u8, 0, 0, 0, 0, 0, 0, 0];
    set_bits(&mut a2, 62, 1, 1);
    tesla.handle_frame(t(2), &f8(0x320, a2), &mut m).unwrap();
    tesla.handle_frame(t(3), &f8(0x320, [0; 8]), &mut m).unwrap();
    assert_eq!(m.faults, BmsFaults::SUPPLY_12V_LOW);
    tesla.handle_frame(t(4), &f8(0x320, [2, 0, 0, 0, 0, 0, 0, 0]), &mut m).unwrap();
    assert_eq!(m.faults, BmsFaults::empty());
    // 0x7AA mux 5: HVP_battery12V 36|12 at 0.1 V; 11.6 V while open is low (BE: < 11.7 V).
    let mut h = [5u8, 0, 0, 0, 0, 0, 0, 0];
    set_bits(&mut h, 36, 12, 116);
    tesla.handle_frame(t(5), &f8(0x7AA, h), &mut m).unwrap();
    assert!(m.faults.contains(BmsFaults::SUPPLY_12V_LOW));
    assert_eq!(m.extras.number(extra::SUPPLY_12V), Some(116));
    set_bits(&mut h, 36, 12, 125);
    tesla.handle_frame(t(6), &f8(0x7AA, h), &mut m).unwrap();
    assert!(!m.faults.contains(BmsFaults::SUPPLY_12V_LOW));
}

#[test]
fn a_pack_voltage_of_a_few_volts_means_a_blown_pyrofuse() {
    // BE: 0.5-5.0 V on the pack → EVENT_BATTERY_FUSE.
    let mut tesla = TeslaModel3::new();
    let mut m = model();
    tesla.handle_frame(t(0), &f8(0x132, [0x2C, 0x01, 0, 0, 0, 0, 0xFF, 0x0F]), &mut m).unwrap(); // 3.00 V
    assert!(m.faults.contains(BmsFaults::INTERNAL));
    assert_eq!(m.extras.flag(extra::PYROFUSE), Some(true));
    tesla.handle_frame(t(10), &f8(0x132, [0x26, 0x91, 0, 0, 0, 0, 0xFF, 0x0F]), &mut m).unwrap(); // 371.58 V
    assert!(!m.faults.contains(BmsFaults::INTERNAL));
}

/// One 0x401 frame: mux, status byte, three bricks in mV.
fn bricks(mux: u8, status: u8, mv: [u16; 3]) -> CanFrame {
    let mut d = [mux, status, 0, 0, 0, 0, 0, 0];
    for (i, v) in mv.into_iter().enumerate() {
        set_bits(&mut d, 16 + 16 * i as u32, 16, v as u32 * 10);
    }
    CanFrame::std8(0x401, d)
}

/// One scan of `cells` bricks at `mv` (the last multiplex partial when `cells` is not a multiple of 3), starting
/// at `now` ms, 10 ms a frame. `skip` leaves out one multiplex.
fn scan(tesla: &mut TeslaModel3, m: &mut BatteryModel, now: &mut u64, cells: u16, mv: u16, skip: Option<u8>) {
    let muxes = cells.div_ceil(3) as u8;
    for mux in 0..muxes {
        let left = cells - mux as u16 * 3;
        let status = match left {
            1 => 0x02,
            2 => 0x0A,
            _ => 0x2A,
        };
        if skip != Some(mux) {
            tesla.handle_frame(t(*now), &bricks(mux, status, [mv, mv + 1, mv + 2]), m).unwrap();
        }
        *now += 10;
    }
}

#[test]
fn brick_voltages_0x401_layout() {
    // DBC: bricks 16|16, 32|16, 48|16 at 0.1 mV; BE truncates to mV (/10). Status 0x2A = three, 0x02 = one.
    let d = [4, 0x2A, 0x7A, 0x90, 0x84, 0x90, 0x8E, 0x90];
    // 0x907A = 36986 → 3698 mV, 0x9084 = 36996 → 3699, 0x908E = 37006 → 3700.
    let b = BrickVoltages::parse(&d).unwrap();
    assert_eq!(b, BrickVoltages { mux: 4, count: 3, bricks: [MilliVolts(3698), MilliVolts(3699), MilliVolts(3700)] });
    assert_eq!(BrickVoltages::parse(&[31, 0x02, 0x7A, 0x90, 0, 0, 0, 0]).unwrap().count, 1);
    assert_eq!(BrickVoltages::parse(&[1, 0x55, 0, 0, 0, 0, 0, 0]), None);
    // A multiplex past 192 cells is out of range.
    let mut tesla = TeslaModel3::new();
    let mut m = model();
    let f = bricks(64, 0x2A, [3700; 3]);
    assert_eq!(tesla.handle_frame(t(0), &f, &mut m), Err(DecodeError::OutOfRange { id: 0x401 }));
}

#[test]
fn the_cell_count_confirms_nca_after_two_agreeing_scans() {
    let mut tesla = TeslaModel3::new();
    let mut m = model();
    let mut now = 0;
    for _ in 0..2 {
        scan(&mut tesla, &mut m, &mut now, 96, 3700, None);
        assert_eq!(m.design_status, DesignStatus::Pending);
    }
    // The third scan's first frame closes the second scan: two agree on 96.
    scan(&mut tesla, &mut m, &mut now, 96, 3710, None);
    assert_eq!(m.design_status, DesignStatus::Confirmed);
    assert_eq!(tesla.cell_count(), Some(96));
    assert_eq!(m.cells.count(), 96);
    assert_eq!(m.cells.voltages()[95], MilliVolts(3702));
    // The cell report is the scan just closed; the next one lands when the fourth begins.
    scan(&mut tesla, &mut m, &mut now, 96, 3720, None);
    assert_eq!(m.cells.voltages()[0], MilliVolts(3710));
    assert!(Quantity::Cells.updated_at(&m).is_some());
}

#[test]
fn lfp_is_confirmed_from_106_cells_and_its_design_takes_the_count() {
    let o = TeslaModel3Options { chemistry: TeslaChemistry::Lfp, digital_hvil: false };
    let mut tesla = TeslaModel3::with_options(o);
    let mut m = model_for(o);
    let mut now = 0;
    for _ in 0..3 {
        scan(&mut tesla, &mut m, &mut now, 104, 3300, None);
    }
    assert_eq!(m.design_status, DesignStatus::Confirmed);
    assert_eq!(m.design.cells, 104);
    assert_eq!(m.design.max_cell_voltage, MilliVolts(3650));
    assert_eq!(tesla.design().cells, 104);
    assert_eq!(m.cells.count(), 104);
}

#[test]
fn a_count_that_contradicts_the_chemistry_is_contradicted_never_switched() {
    // Configured NCA (the default), the pack shows 106 cells: contradicted, design limits unchanged (still NCA).
    let mut tesla = TeslaModel3::new();
    let mut m = model();
    let mut now = 0;
    for _ in 0..3 {
        scan(&mut tesla, &mut m, &mut now, 106, 3300, None);
    }
    assert_eq!(m.design_status, DesignStatus::Contradicted);
    assert_eq!(m.design.chemistry, Chemistry::Nca);
    assert_eq!(m.cells.count(), 0, "cells of a contradicted design are not stored");
    // It stays contradicted even if the count later fits.
    for _ in 0..3 {
        scan(&mut tesla, &mut m, &mut now, 96, 3700, None);
    }
    assert_eq!(m.design_status, DesignStatus::Contradicted);
    // Configured LFP, a 96-cell pack: contradicted too.
    let o = TeslaModel3Options { chemistry: TeslaChemistry::Lfp, digital_hvil: false };
    let mut tesla = TeslaModel3::with_options(o);
    let mut m = model_for(o);
    let mut now = 0;
    for _ in 0..3 {
        scan(&mut tesla, &mut m, &mut now, 96, 3700, None);
    }
    assert_eq!(m.design_status, DesignStatus::Contradicted);
}

#[test]
fn a_dropped_frame_does_not_read_as_another_chemistry() {
    let mut tesla = TeslaModel3::new();
    let mut m = model();
    let mut now = 0;
    // A scan missing its last multiplex, and one missing a middle one: neither counts.
    scan(&mut tesla, &mut m, &mut now, 96, 3700, Some(31));
    scan(&mut tesla, &mut m, &mut now, 96, 3700, Some(10));
    scan(&mut tesla, &mut m, &mut now, 96, 3700, None);
    assert_eq!(m.design_status, DesignStatus::Pending);
    scan(&mut tesla, &mut m, &mut now, 96, 3700, None);
    scan(&mut tesla, &mut m, &mut now, 96, 3700, None);
    assert_eq!(m.design_status, DesignStatus::Confirmed);
}

#[test]
fn required_readings_and_their_ages() {
    let tesla = TeslaModel3::new();
    let age = |q: Quantity| tesla.requirements().iter().find(|r| r.quantity == q).map(|r| r.max_age.as_millis());
    // 0x132 10 ms → 1 s; 0x212, 0x292, 0x2D2 100 ms → 3 s; 0x332 10 s and 0x401 60 s (DBE's choices).
    assert_eq!(age(Quantity::PackVoltage), Some(1000));
    assert_eq!(age(Quantity::Current), Some(1000));
    assert_eq!(age(Quantity::Status), Some(3000));
    assert_eq!(age(Quantity::Soc), Some(3000));
    assert_eq!(age(Quantity::BmsChargeCurrent), Some(3000));
    assert_eq!(age(Quantity::BmsDischargeCurrent), Some(3000));
    assert_eq!(age(Quantity::TemperatureMin), Some(10_000));
    assert_eq!(age(Quantity::TemperatureMax), Some(10_000));
    assert_eq!(age(Quantity::Cells), Some(60_000));
    // Power limits are not required (see the module doc).
    assert_eq!(age(Quantity::BmsChargePower), None);
    // Each required reading is decoded by a frame of its own: prove it by feeding each and asking the model.
    let mut tesla = TeslaModel3::new();
    let mut m = model();
    let frames = [
        f8(0x132, [0x26, 0x91, 0, 0, 0, 0, 0xFF, 0x0F]),
        f8(0x212, [0, 1, 0, 0, 0, 0, 0, 0]),
        f8(0x292, [0, 0, 0, 0, 0, 0, 0, 0]),
        f8(0x2D2, [0; 8]),
        CanFrame::standard(0x332, &[0, 0, 0x80, 0x70, 0, 0]).unwrap(),
    ];
    for f in frames {
        tesla.handle_frame(t(0), &f, &mut m).unwrap();
    }
    for r in REQUIRED {
        if r.quantity != Quantity::Cells {
            assert_eq!(r.quantity.updated_at(&m), Some(t(0)), "{:?}", r.quantity);
        }
    }
}

/// Drains the driver from `from` to `to` ms in 10 ms steps.
fn sent(tesla: &mut TeslaModel3, from: u64, to: u64) -> Vec<(u64, CanFrame)> {
    let mut out = vec![];
    let mut now = from;
    while now < to {
        while let Some(f) = tesla.poll_transmit(t(now)) {
            out.push((now, f));
        }
        now += 10;
    }
    out
}

#[test]
fn the_car_frames_go_out_at_battery_emulators_periods_with_stepping_counters() {
    let mut tesla = TeslaModel3::new();
    tesla.set_contactors(t(0), ContactorRequest::Open);
    let out = sent(&mut tesla, 0, 1000);
    let count = |id: u16| out.iter().filter(|(_, f)| f.standard_id() == Some(id)).count();
    assert_eq!(count(0x118), 100, "10 ms");
    assert_eq!(count(0x2E1), 100, "10 ms");
    assert_eq!((count(0x221), count(0x3C2), count(0x39D)), (20, 20, 20), "50 ms");
    for id in [0x102, 0x103, 0x229, 0x241, 0x2D1, 0x2A8, 0x2E8, 0x7FF] {
        assert_eq!(count(id), 10, "{id:#x} at 100 ms");
    }
    for id in [0x213, 0x284, 0x293, 0x313, 0x333, 0x334, 0x3B3, 0x55A] {
        assert_eq!(count(id), 2, "{id:#x} at 500 ms");
    }
    assert_eq!((count(0x082), count(0x321)), (1, 1), "1 s");
    assert_eq!(count(0x3A1), 0, "0x3A1 only while the pack reports closed");
    assert_eq!(count(0x1CF), 0, "no digital HVIL unless asked for");
    // Every counted frame: the counter steps by one and the checksum is opendbc's sum.
    let of = |id: u16| out.iter().filter(move |(_, f)| f.standard_id() == Some(id)).map(|(_, f)| *f);
    for spec in [DI_SYSTEM_STATUS, IBST_STATUS, CMPD_STATE, EPBR_STATUS] {
        let frames: Vec<CanFrame> = of(spec.id).collect();
        for (i, f) in frames.iter().enumerate() {
            let expected = ((spec.first_counter() as usize + i) % (1 << spec.counter_len)) as u32;
            assert_eq!(bits(f.data8(), spec.counter_start, spec.counter_len), expected, "{:#x} #{i}", spec.id);
            assert_eq!(f.data()[spec.checksum_byte], tesla_checksum(spec.id, f.data(), spec.checksum_byte));
        }
    }
    // 0x221: mux 1 first with counter 15 (BE), then alternating, one counter for both.
    let lv: Vec<CanFrame> = of(0x221).collect();
    for (i, f) in lv.iter().enumerate() {
        assert_eq!(f.data()[0] & 1, if i % 2 == 0 { 1 } else { 0 }, "mux of #{i}");
        assert_eq!(bits(f.data8(), 52, 4), ((15 + i) % 16) as u32, "counter of #{i}");
        assert_eq!(f.data()[7], tesla_checksum(0x221, f.data(), 7));
    }
    // 0x334: the initial frame first, then the template's counter.
    let ui: Vec<CanFrame> = of(0x334).collect();
    assert_eq!(ui[0].data(), &UI_REQUEST_INITIAL);
    assert_eq!(ui[1], UI_REQUEST.frame(UI_REQUEST.first_counter()));
    // 0x229 counts from 0 with its CRC.
    let stalk: Vec<CanFrame> = of(0x229).collect();
    assert_eq!(stalk[3], sccm_right_stalk(3));
}

fn power_state_sent(tesla: &mut TeslaModel3, at: u64) -> u32 {
    let out = sent(tesla, at, at + 100);
    let f = out.iter().find(|(_, f)| f.standard_id() == Some(0x221)).expect("0x221 every 50 ms").1;
    bits(f.data8(), 5, 2)
}

#[test]
fn the_power_state_drives_while_closed_and_steps_down_to_open() {
    let mut tesla = TeslaModel3::new();
    tesla.set_contactors(t(0), ContactorRequest::Open);
    assert_eq!(power_state_sent(&mut tesla, 0), 0, "never driven: OFF");
    tesla.set_contactors(t(1000), ContactorRequest::Closed);
    assert_eq!(power_state_sent(&mut tesla, 1000), 3, "DRIVE");
    tesla.set_contactors(t(10_000), ContactorRequest::Open);
    // ACCESSORY for 3 s, then GOING_DOWN (sent as OFF with BE's key parts) for 3 s, then OFF.
    assert_eq!(tesla.power_state(t(10_000)), PowerState::Accessory);
    assert_eq!(power_state_sent(&mut tesla, 10_000), 2);
    assert_eq!(tesla.power_state(t(12_990)), PowerState::Accessory);
    assert_eq!(tesla.power_state(t(13_000)), PowerState::GoingDown);
    let out = sent(&mut tesla, 13_000, 13_100);
    let f = out.iter().find(|(_, f)| f.standard_id() == Some(0x221)).unwrap().1;
    assert_eq!(f.data()[0] & 0x60, 0, "GOING_DOWN says power state OFF");
    assert_eq!(tesla.power_state(t(16_000)), PowerState::Off);
    // Closing again drives at once.
    tesla.set_contactors(t(14_000), ContactorRequest::Closed);
    assert_eq!(tesla.power_state(t(14_000)), PowerState::Drive);
}

#[test]
fn digital_hvil_frames_go_out_only_while_the_contactors_are_wanted() {
    let o = TeslaModel3Options { digital_hvil: true, ..Default::default() };
    let mut tesla = TeslaModel3::with_options(o);
    tesla.set_contactors(t(0), ContactorRequest::Open);
    let out = sent(&mut tesla, 0, 200);
    assert!(out.iter().all(|(_, f)| !matches!(f.standard_id(), Some(0x1CF | 0x118))), "nothing while open");
    tesla.set_contactors(t(200), ContactorRequest::Closed);
    let out = sent(&mut tesla, 200, 400);
    let hvil: Vec<_> = out.iter().filter(|(_, f)| f.standard_id() == Some(0x1CF)).collect();
    let di: Vec<_> = out.iter().filter(|(_, f)| f.standard_id() == Some(0x118)).collect();
    assert_eq!((hvil.len(), di.len()), (20, 20));
    assert_eq!(hvil[0].1, DIGITAL_HVIL.frame(3), "BE's table starts at counter 3");
    assert_eq!(di[0].1.data()[..2], [0x61, 0x80]);
}

/// 0x212 with the given contactor state (everything else 0).
fn status(state: u8) -> CanFrame {
    f8(0x212, [0, state, 0, 0, 0, 0, 0, 0])
}

#[test]
fn the_reported_contactor_state_is_the_models_and_faults_are_faults() {
    let mut tesla = TeslaModel3::new();
    let mut m = model();
    tesla.handle_frame(t(0), &status(1), &mut m).unwrap();
    assert_eq!(m.contactors, Contactors::Open);
    tesla.set_contactors(t(0), ContactorRequest::Closed);
    tesla.handle_frame(t(100), &status(3), &mut m).unwrap();
    assert_eq!(m.contactors, Contactors::Precharging);
    tesla.handle_frame(t(2000), &status(4), &mut m).unwrap();
    assert_eq!((m.contactors, m.faults), (Contactors::Closed, BmsFaults::empty()));
    // 0x3A1 goes out while the pack reports CLOSED.
    assert!(sent(&mut tesla, 2000, 2100).iter().any(|(_, f)| f.standard_id() == Some(0x3A1)));
    // WELDED: a fault, latched.
    tesla.handle_frame(t(3000), &status(5), &mut m).unwrap();
    assert_eq!(m.contactors, Contactors::Fault);
    assert!(m.faults.contains(BmsFaults::CONTACTOR));
    tesla.handle_frame(t(3100), &status(1), &mut m).unwrap();
    assert_eq!(m.contactors, Contactors::Fault, "a weld stays latched");
}

#[test]
fn blocked_while_closing_and_a_close_that_never_completes_are_faults() {
    // BLOCKED while nobody asks to close is only open.
    let mut tesla = TeslaModel3::new();
    let mut m = model();
    tesla.handle_frame(t(0), &status(6), &mut m).unwrap();
    assert_eq!((m.contactors, m.faults), (Contactors::Open, BmsFaults::empty()));
    tesla.set_contactors(t(10), ContactorRequest::Closed);
    tesla.handle_frame(t(100), &status(6), &mut m).unwrap();
    assert_eq!(m.contactors, Contactors::Fault);
    assert!(m.faults.contains(BmsFaults::CONTACTOR));
    // A close that stays CLOSING past the timeout.
    let mut tesla = TeslaModel3::new();
    let mut m = model();
    tesla.set_contactors(t(0), ContactorRequest::Closed);
    tesla.handle_frame(t(CLOSE_TIMEOUT.as_millis()), &status(3), &mut m).unwrap();
    assert_eq!(m.contactors, Contactors::Precharging);
    tesla.handle_frame(t(CLOSE_TIMEOUT.as_millis() + 100), &status(3), &mut m).unwrap();
    assert_eq!(m.contactors, Contactors::Fault);
    tesla.handle_frame(t(CLOSE_TIMEOUT.as_millis() + 200), &status(4), &mut m).unwrap();
    assert_eq!(m.contactors, Contactors::Fault, "latched until the bridge restarts");
}

#[test]
fn options_table_and_extras_table() {
    let mut o = TeslaModel3Options::default();
    assert_eq!(crate::options::Options::get(&o, "chemistry"), Some(OptionValue::Word("nca")));
    crate::options::Options::set(&mut o, "chemistry", OptionValue::Word("lfp")).unwrap();
    crate::options::Options::set(&mut o, "digital_hvil", OptionValue::Bool(true)).unwrap();
    assert_eq!(o, TeslaModel3Options { chemistry: TeslaChemistry::Lfp, digital_hvil: true });
    assert!(crate::options::Options::set(&mut o, "chemistry", OptionValue::Word("nmc")).is_err());
    assert_eq!(crate::extras::check_table(EXTRAS), Ok(()));
    assert_eq!(TeslaModel3::new().contactor_modes(), [ContactorMode::Can]);
}

proptest! {
    #[test]
    fn no_frame_panics_or_breaks_the_model(
        id in prop::sample::select(vec![0x132u16, 0x292, 0x332, 0x401, 0x2D2, 0x252, 0x212, 0x20A, 0x352, 0x3D2,
            0x320, 0x7AA, 0x118, 0x221, 0x123]),
        len in 0usize..=8,
        data in proptest::array::uniform8(any::<u8>()),
        closed in any::<bool>(),
    ) {
        let mut tesla = TeslaModel3::new();
        let mut m = model();
        if closed {
            tesla.set_contactors(t(0), ContactorRequest::Closed);
        }
        let f = CanFrame::standard(id, &data[..len]).unwrap();
        let before = m.clone();
        if tesla.handle_frame(t(1), &f, &mut m).is_err() {
            prop_assert_eq!(m, before);
        }
        let mut n = 0;
        while tesla.poll_transmit(t(1)).is_some() {
            n += 1;
            prop_assert!(n < 100);
        }
    }

    #[test]
    fn any_11_bit_frame_decodes_or_is_refused(id in 0u16..0x800, len in 0usize..=8, data in proptest::array::uniform8(any::<u8>())) {
        let mut tesla = TeslaModel3::new();
        let mut m = model();
        let f = CanFrame::standard(id, &data[..len]).unwrap();
        let _ = tesla.handle_frame(t(1), &f, &mut m);
    }
}
