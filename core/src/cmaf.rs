//! Just enough ISO BMFF reading to tell whether two CMAF init segments are interchangeable.
//!
//! A player that appends segments of several renditions to one decoder (a CMAF *switching
//! set*) needs them to share the decoder configuration: codec, channel count, sample rate and,
//! for MPEG-4 audio, the AudioSpecificConfig (which is where AAC really says mono or stereo).
//! Renditions of one ladder may differ there (the encoder makes low bitrates mono), so the
//! client reads each init's first audio sample entry (`moov/trak/mdia/minf/stbl/stsd`) and only
//! switches within a set whose entries agree. Bounded and panic-free on any input.

/// The decoder-relevant part of an audio sample entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AudioConfig {
    /// The sample entry's four-character code (`mp4a`, `Opus`, `fLaC`…).
    pub format: [u8; 4],
    /// Channel count.
    pub channels: u16,
    /// Sample rate in Hz (integer part of the 16.16 field).
    pub sample_rate: u32,
    /// The decoder-specific info of an `esds` box (the AAC AudioSpecificConfig); empty when
    /// the entry has none. Bitrate fields, which differ between rungs, are not part of it.
    pub decoder_specific: Vec<u8>,
}

/// Reads the audio configuration of the first track of an init segment, `None` when the bytes
/// are not an init segment with an audio sample entry.
#[must_use]
pub fn audio_config(init: &[u8]) -> Option<AudioConfig> {
    let moov = child(init, b"moov")?;
    let trak = child(moov, b"trak")?;
    let mdia = child(trak, b"mdia")?;
    let minf = child(mdia, b"minf")?;
    let stbl = child(minf, b"stbl")?;
    let stsd = child(stbl, b"stsd")?;
    // Full box header (version + flags) and entry count, then the first sample entry.
    let entries = stsd.get(8..)?;
    let size = usize::try_from(u32::from_be_bytes(entries.get(0..4)?.try_into().ok()?)).ok()?;
    let entry = entries.get(..size)?;
    let format: [u8; 4] = entry.get(4..8)?.try_into().ok()?;
    // SampleEntry: 6 reserved + data_reference_index (2); AudioSampleEntry: 8 reserved,
    // channelcount (2), samplesize (2), pre_defined (2), reserved (2), samplerate (4, 16.16).
    let body = entry.get(8..)?;
    let channels = u16::from_be_bytes(body.get(16..18)?.try_into().ok()?);
    let rate = u32::from_be_bytes(body.get(24..28)?.try_into().ok()?) >> 16;
    let decoder_specific = child(body.get(28..)?, b"esds").and_then(esds_decoder_specific).unwrap_or_default();
    Some(AudioConfig { format, channels, sample_rate: rate, decoder_specific })
}

/// The DecoderSpecificInfo (tag 5) inside an `esds` payload (ISO/IEC 14496-1 descriptors).
fn esds_decoder_specific(esds: &[u8]) -> Option<Vec<u8>> {
    let mut d = esds.get(4..)?; // version + flags
    // ES_Descriptor (tag 3): ES_ID (2) and flags (1), then optional fields the flags announce.
    let (tag, es) = descriptor(&mut d)?;
    if tag != 3 {
        return None;
    }
    let flags = *es.get(2)?;
    let mut rest = es.get(3..)?;
    if flags & 0x80 != 0 {
        rest = rest.get(2..)?; // dependsOn_ES_ID
    }
    if flags & 0x40 != 0 {
        let len = usize::from(*rest.first()?);
        rest = rest.get(1 + len..)?; // URL
    }
    if flags & 0x20 != 0 {
        rest = rest.get(2..)?; // OCR_ES_ID
    }
    // DecoderConfigDescriptor (tag 4): 13 fixed bytes (object type, stream type, buffer size,
    // max and average bitrate), then the DecoderSpecificInfo (tag 5).
    let (tag, mut config) = descriptor(&mut rest)?;
    if tag != 4 {
        return None;
    }
    config = config.get(13..)?;
    let (tag, info) = descriptor(&mut config)?;
    (tag == 5).then(|| info.to_vec())
}

/// Reads one descriptor (tag, then a size of up to four 7-bit bytes) from the front of `d`.
fn descriptor<'a>(d: &mut &'a [u8]) -> Option<(u8, &'a [u8])> {
    let tag = *d.first()?;
    let mut size = 0usize;
    let mut at = 1;
    loop {
        let b = *d.get(at)?;
        size = (size << 7) | usize::from(b & 0x7f);
        at += 1;
        if b & 0x80 == 0 {
            break;
        }
        if at > 4 {
            return None;
        }
    }
    let body = d.get(at..at.checked_add(size)?)?;
    *d = &d[at + size..];
    Some((tag, body))
}

/// The payload of the first child box of type `kind` within `data` (a sequence of boxes).
fn child<'a>(mut data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    while data.len() >= 8 {
        let size32 = u32::from_be_bytes(data[0..4].try_into().ok()?);
        let (header, size) = match size32 {
            0 => (8, data.len()),
            1 => (16, usize::try_from(u64::from_be_bytes(data.get(8..16)?.try_into().ok()?)).ok()?),
            n => (8, usize::try_from(n).ok()?),
        };
        if size < header || size > data.len() {
            return None;
        }
        if &data[4..8] == kind {
            return data.get(header..size);
        }
        data = &data[size..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut v = u32::try_from(payload.len() + 8).unwrap().to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(payload);
        v
    }

    fn init(channels: u16, rate: u32) -> Vec<u8> {
        let mut entry = vec![0u8; 8]; // reserved + data_reference_index
        entry.extend_from_slice(&[0u8; 8]);
        entry.extend_from_slice(&channels.to_be_bytes());
        entry.extend_from_slice(&16u16.to_be_bytes());
        entry.extend_from_slice(&[0u8; 4]);
        entry.extend_from_slice(&(rate << 16).to_be_bytes());
        // esds: ES_Descriptor { ES_ID, flags, DecoderConfigDescriptor { …, DecoderSpecificInfo } }
        let asc: [u8; 2] = if channels == 1 { [0x12, 0x08] } else { [0x12, 0x10] };
        let mut dcd = vec![0x40, 0x15, 0, 0, 0];
        dcd.extend_from_slice(&96_000u32.to_be_bytes());
        dcd.extend_from_slice(&96_000u32.to_be_bytes());
        dcd.extend_from_slice(&[0x05, 0x80, 0x80, 0x80, 2]);
        dcd.extend_from_slice(&asc);
        let mut es = vec![0, 1, 0, 0x04, u8::try_from(dcd.len()).unwrap()];
        es.extend(dcd);
        let mut esds = vec![0, 0, 0, 0, 0x03, u8::try_from(es.len()).unwrap()];
        esds.extend(es);
        entry.extend(boxed(b"esds", &esds));
        let mut stsd = vec![0, 0, 0, 0, 0, 0, 0, 1];
        stsd.extend(boxed(b"mp4a", &entry));
        let stbl = boxed(b"stbl", &boxed(b"stsd", &stsd));
        let trak = boxed(b"trak", &boxed(b"mdia", &boxed(b"minf", &stbl)));
        let mut file = boxed(b"ftyp", b"iso6\0\0\0\0");
        file.extend(boxed(b"moov", &[boxed(b"mvhd", &[0u8; 100]), trak].concat()));
        file
    }

    #[test]
    fn reads_channels_and_rate_and_tells_configurations_apart() {
        let stereo = audio_config(&init(2, 44_100)).unwrap();
        assert_eq!(
            stereo,
            AudioConfig { format: *b"mp4a", channels: 2, sample_rate: 44_100, decoder_specific: vec![0x12, 0x10] }
        );
        let mono = audio_config(&init(1, 44_100)).unwrap();
        assert_eq!(mono.decoder_specific, [0x12, 0x08]);
        assert_ne!(mono, stereo);
        assert_ne!(audio_config(&init(2, 48_000)), Some(stereo));
    }

    #[test]
    fn reads_the_shipped_samples_ladders() {
        // The samples were encoded by ffmpeg (samples/generate.sh); every rung is AAC-LC.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/chorus-tides");
        for (rung, init) in [("aac-24", "init_0.mp4"), ("aac-96", "init_1.mp4")] {
            let c = audio_config(&std::fs::read(dir.join(rung).join(init)).unwrap()).unwrap();
            assert_eq!((&c.format, c.sample_rate), (b"mp4a", 44_100), "{rung}");
            assert_eq!(c.decoder_specific.first().map(|b| b >> 3), Some(2), "{rung}: AAC-LC object type");
        }
    }

    #[test]
    fn truncated_or_foreign_bytes_give_none() {
        let good = init(2, 48_000);
        for cut in 0..good.len() {
            assert_eq!(audio_config(&good[..cut]), None, "cut at {cut}");
        }
        assert_eq!(audio_config(b"not an mp4 at all"), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = audio_config(&bytes);
        }
    }
}
