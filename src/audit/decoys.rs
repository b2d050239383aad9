//! Decoy patients: synthetic but realistic records (a CT series written as
//! real DICOM Part 10 with `dicom-object`, a radiology report, a FHIR R4
//! DiagnosticReport) that the fog node plants beside real patients through
//! the normal write path. Their directory names, sizes, owners, modes and
//! timestamps imitate the real patients of the folder; inode numbers are
//! random for every file; listing order is by keyed name hash. Nothing in a
//! decoy says it is one: only its sealed inode record carries the flag.

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

use crate::error::{Error, Result};
use crate::metadata::{FileKind, Timespec};
use crate::vault::{PlantAttrs, Vault};

const LAST: &[&str] = &[
    "SMITH",
    "JOHNSON",
    "WILLIAMS",
    "BROWN",
    "JONES",
    "GARCIA",
    "MILLER",
    "DAVIS",
    "RODRIGUEZ",
    "MARTINEZ",
    "HERNANDEZ",
    "LOPEZ",
    "GONZALEZ",
    "WILSON",
    "ANDERSON",
    "THOMAS",
    "TAYLOR",
    "MOORE",
    "JACKSON",
    "MARTIN",
    "LEE",
    "PEREZ",
    "THOMPSON",
    "WHITE",
    "HARRIS",
    "SANCHEZ",
    "CLARK",
    "RAMIREZ",
    "LEWIS",
    "ROBINSON",
    "WALKER",
    "YOUNG",
    "ALLEN",
    "KING",
    "WRIGHT",
    "SCOTT",
    "TORRES",
    "NGUYEN",
    "HILL",
    "FLORES",
    "GREEN",
    "ADAMS",
    "NELSON",
    "BAKER",
    "HALL",
    "RIVERA",
    "CAMPBELL",
    "MITCHELL",
    "CARTER",
    "ROBERTS",
    "MULLER",
    "SCHMIDT",
    "SCHNEIDER",
    "FISCHER",
];
const FIRST: &[&str] = &[
    "JAMES",
    "MARY",
    "ROBERT",
    "PATRICIA",
    "JOHN",
    "JENNIFER",
    "MICHAEL",
    "LINDA",
    "DAVID",
    "ELIZABETH",
    "WILLIAM",
    "BARBARA",
    "RICHARD",
    "SUSAN",
    "JOSEPH",
    "JESSICA",
    "THOMAS",
    "SARAH",
    "CHARLES",
    "KAREN",
    "CHRISTOPHER",
    "LISA",
    "DANIEL",
    "NANCY",
    "MATTHEW",
    "BETTY",
    "ANTHONY",
    "MARGARET",
    "MARK",
    "SANDRA",
    "DONALD",
    "ASHLEY",
    "STEVEN",
    "KIMBERLY",
    "PAUL",
    "EMILY",
    "ANDREW",
    "DONNA",
    "JOSHUA",
    "MICHELLE",
    "ANNA",
    "LUCAS",
    "SOFIA",
];
const FINDINGS: &[&str] = &[
    "No acute intracranial abnormality.",
    "Small hypodense lesion in the left hepatic lobe, likely a cyst.",
    "Mild emphysematous changes in both upper lobes.",
    "Subsegmental atelectasis at the right lung base.",
    "No evidence of pulmonary embolism.",
    "Stable 4 mm nodule in the right middle lobe.",
    "Degenerative changes of the lumbar spine without canal stenosis.",
    "Unremarkable study of the abdomen and pelvis.",
];
const BODY: &[&str] = &["HEAD", "CHEST", "ABDOMEN", "PELVIS", "SPINE"];

/// One file of a synthetic patient, relative to the patient's directory.
pub struct SynthFile {
    pub path: String,
    pub data: Vec<u8>,
}

pub struct SynthPatient {
    /// Directory name: `LAST_FIRST_MRN`, like the real ones.
    pub dir: String,
    pub files: Vec<SynthFile>,
}

fn uid(rng: &mut StdRng) -> String {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    format!("2.25.{}", u128::from_be_bytes(b))
}

fn date(rng: &mut StdRng, from_year: i32, to_year: i32) -> String {
    format!(
        "{:04}{:02}{:02}",
        rng.random_range(from_year..=to_year),
        rng.random_range(1..=12u32),
        rng.random_range(1..=28u32)
    )
}

fn el(tag: dicom_core::Tag, vr: VR, v: impl Into<PrimitiveValue>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, v.into())
}

/// One CT slice as a DICOM Part 10 file (explicit VR little endian).
#[allow(clippy::too_many_arguments)]
fn ct_slice(
    rng: &mut StdRng,
    name: &str,
    mrn: &str,
    birth: &str,
    sex: &str,
    study_date: &str,
    study_uid: &str,
    series_uid: &str,
    body: &str,
    index: u32,
    size: u16,
) -> Result<Vec<u8>> {
    let sop_uid = uid(rng);
    let mut obj = InMemDicomObject::new_empty();
    obj.put(el(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2"));
    obj.put(el(tags::SOP_INSTANCE_UID, VR::UI, sop_uid.as_str()));
    obj.put(el(tags::STUDY_DATE, VR::DA, study_date));
    obj.put(el(tags::MODALITY, VR::CS, "CT"));
    obj.put(el(tags::STUDY_DESCRIPTION, VR::LO, format!("CT {body}").as_str()));
    obj.put(el(tags::PATIENT_NAME, VR::PN, name));
    obj.put(el(tags::PATIENT_ID, VR::LO, mrn));
    obj.put(el(tags::PATIENT_BIRTH_DATE, VR::DA, birth));
    obj.put(el(tags::PATIENT_SEX, VR::CS, sex));
    obj.put(el(tags::BODY_PART_EXAMINED, VR::CS, body));
    obj.put(el(tags::SLICE_THICKNESS, VR::DS, "2.5"));
    obj.put(el(tags::STUDY_INSTANCE_UID, VR::UI, study_uid));
    obj.put(el(tags::SERIES_INSTANCE_UID, VR::UI, series_uid));
    obj.put(el(tags::SERIES_NUMBER, VR::IS, "1"));
    obj.put(el(tags::INSTANCE_NUMBER, VR::IS, index.to_string().as_str()));
    obj.put(el(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1_u16)));
    obj.put(el(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"));
    obj.put(el(tags::ROWS, VR::US, PrimitiveValue::from(size)));
    obj.put(el(tags::COLUMNS, VR::US, PrimitiveValue::from(size)));
    obj.put(el(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16_u16)));
    obj.put(el(tags::BITS_STORED, VR::US, PrimitiveValue::from(12_u16)));
    obj.put(el(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11_u16)));
    obj.put(el(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0_u16)));
    obj.put(el(tags::RESCALE_INTERCEPT, VR::DS, "-1024"));
    obj.put(el(tags::RESCALE_SLOPE, VR::DS, "1"));
    // A smooth disc of tissue plus noise: compresses like a real slice.
    let n = size as usize;
    let mut pixels = Vec::with_capacity(n * n * 2);
    let r2 = (n as f64 * 0.4).powi(2);
    for y in 0..n {
        for x in 0..n {
            let d2 = (x as f64 - n as f64 / 2.0).powi(2) + (y as f64 - n as f64 / 2.0).powi(2);
            let base: i32 = if d2 < r2 { 1040 + ((x + y + index as usize) % 40) as i32 } else { 24 };
            let v = (base + rng.random_range(-30..=30)).clamp(0, 4095) as u16;
            pixels.extend_from_slice(&v.to_le_bytes());
        }
    }
    obj.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(pixels)));
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax("1.2.840.10008.1.2.1"))
        .map_err(|e| Error::Repo(format!("cannot build a DICOM object: {e}")))?;
    let mut out = Vec::new();
    file.write_all(&mut out).map_err(|e| Error::Repo(format!("cannot write a DICOM object: {e}")))?;
    Ok(out)
}

/// `count` synthetic patients from `seed` (the same seed gives the same patients).
pub fn synth_patients(count: u32, seed: u64) -> Result<Vec<SynthPatient>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (last, first) = (LAST[rng.random_range(0..LAST.len())], FIRST[rng.random_range(0..FIRST.len())]);
        let mrn = format!("{:07}", rng.random_range(1_000_000..9_999_999u32));
        let name = format!("{last}^{first}");
        let birth = date(&mut rng, 1930, 2012);
        let sex = if rng.random_range(0..2) == 0 { "F" } else { "M" };
        let study_date = date(&mut rng, 2019, 2025);
        let (study_uid, series_uid) = (uid(&mut rng), uid(&mut rng));
        let body = BODY[rng.random_range(0..BODY.len())];
        let slices = rng.random_range(6..=18u32);
        let mut files = Vec::new();
        for i in 1..=slices {
            let data =
                ct_slice(&mut rng, &name, &mrn, &birth, sex, &study_date, &study_uid, &series_uid, body, i, 256)?;
            files.push(SynthFile { path: format!("CT/IMG{i:04}.dcm"), data });
        }
        let finding = FINDINGS[rng.random_range(0..FINDINGS.len())];
        let report = format!(
            "RADIOLOGY REPORT\nPatient: {last}, {first}\nMRN: {mrn}\nDOB: {birth}\nExam: CT {body}\nDate: {study_date}\n\n\
             FINDINGS:\n{finding}\n\nIMPRESSION:\n{finding}\n\nElectronically signed.\n"
        );
        files.push(SynthFile { path: "report.txt".into(), data: report.into_bytes() });
        let fhir = serde_json::json!({
            "resourceType": "DiagnosticReport",
            "id": uid(&mut rng),
            "status": "final",
            "code": { "text": format!("CT {body}") },
            "subject": { "identifier": { "value": mrn }, "display": format!("{first} {last}") },
            "effectiveDateTime": format!("{}-{}-{}", &study_date[..4], &study_date[4..6], &study_date[6..]),
            "conclusion": finding,
        });
        let data = serde_json::to_vec_pretty(&fhir).expect("a JSON value serializes");
        files.push(SynthFile { path: "fhir-diagnosticreport.json".into(), data });
        out.push(SynthPatient { dir: format!("{last}_{first}_{mrn}"), files });
    }
    Ok(out)
}

/// The spread of one timestamp over real records (nanoseconds since the
/// epoch): decoys draw from it.
#[derive(Clone, Copy)]
struct Range {
    lo: i128,
    hi: i128,
}

fn nanos(t: Timespec) -> i128 {
    i128::from(t.secs) * 1_000_000_000 + i128::from(t.nanos)
}

fn from_nanos(n: i128) -> Timespec {
    Timespec { secs: n.div_euclid(1_000_000_000) as i64, nanos: n.rem_euclid(1_000_000_000) as u32 }
}

/// A ctime no earlier than the mtime: real records never change before they were written.
fn changed_after(ctime: Timespec, mtime: Timespec) -> Timespec {
    if nanos(ctime) < nanos(mtime) { mtime } else { ctime }
}

impl Range {
    fn of(v: impl Iterator<Item = Timespec>) -> Option<Range> {
        v.map(nanos).fold(None, |r: Option<Range>, x| {
            Some(r.map_or(Range { lo: x, hi: x }, |r| Range { lo: r.lo.min(x), hi: r.hi.max(x) }))
        })
    }
    fn draw(&self, rng: &mut StdRng) -> Timespec {
        from_nanos(rng.random_range(self.lo..=self.hi))
    }
}

/// What real records of a folder look like: owners, modes, time ranges.
struct Looks {
    uid: u32,
    gid: u32,
    dir_perm: u32,
    file_perm: u32,
    /// (atime, mtime, ctime) ranges of the real patients' directories and files.
    dirs: [Range; 3],
    files: [Range; 3],
    /// Per real patient, (atime, mtime, ctime): how far its files' times lie
    /// apart, and where its directory's time lies from its oldest file's
    /// (medians over patients). One patient's records are imported together,
    /// so a decoy's times must cluster the same way.
    file_spread: [i128; 3],
    dir_offset: [i128; 3],
}

/// The files of a patient directory and of its subdirectories (a study's
/// slices), at most a few hundred.
fn patient_files(vault: &Vault, dir: u64) -> Result<Vec<crate::vault::Attr>> {
    let mut out = Vec::new();
    for (e, a) in vault.readdir_plus(dir, 0, 256)? {
        match e.kind {
            FileKind::File => out.push(a),
            FileKind::Dir if e.name != b"." && e.name != b".." => out.extend(
                vault
                    .readdir_plus(e.ino, 0, 256)?
                    .into_iter()
                    .filter(|(s, _)| s.kind == FileKind::File)
                    .map(|(_, f)| f),
            ),
            _ => {}
        }
    }
    Ok(out)
}

fn looks_of(vault: &Vault, root: u64) -> Result<Looks> {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let (mut spreads, mut offsets): (Vec<[i128; 3]>, Vec<[i128; 3]>) = (Vec::new(), Vec::new());
    for (d, a) in vault.readdir_plus(root, 0, 100_000)? {
        if d.kind != FileKind::Dir || a.decoy || d.name == b"." || d.name == b".." {
            continue;
        }
        if spreads.len() < 64 {
            let mine = patient_files(vault, d.ino)?;
            if !mine.is_empty() {
                let times = |f: &crate::vault::Attr| [nanos(f.atime), nanos(f.mtime), nanos(f.ctime)];
                let dir_times = [nanos(a.atime), nanos(a.mtime), nanos(a.ctime)];
                let lo: [i128; 3] = std::array::from_fn(|k| mine.iter().map(|f| times(f)[k]).min().unwrap_or(0));
                let hi: [i128; 3] = std::array::from_fn(|k| mine.iter().map(|f| times(f)[k]).max().unwrap_or(0));
                spreads.push(std::array::from_fn(|k| hi[k] - lo[k]));
                offsets.push(std::array::from_fn(|k| dir_times[k] - lo[k]));
            }
            if files.len() < 256 {
                files.extend(mine);
            }
        }
        dirs.push(a);
    }
    let median = |v: &[[i128; 3]], k: usize| {
        let mut x: Vec<i128> = v.iter().map(|t| t[k]).collect();
        x.sort_unstable();
        x.get(x.len() / 2).copied().unwrap_or(0)
    };
    let month_ago = nanos(Timespec::now()) - 86_400 * 30 * 1_000_000_000;
    let fallback = Range { lo: month_ago, hi: month_ago };
    let ranges = |v: &[crate::vault::Attr]| {
        [
            Range::of(v.iter().map(|a| a.atime)).unwrap_or(fallback),
            Range::of(v.iter().map(|a| a.mtime)).unwrap_or(fallback),
            Range::of(v.iter().map(|a| a.ctime)).unwrap_or(fallback),
        ]
    };
    let first = dirs.first();
    Ok(Looks {
        uid: first.map_or(0, |a| a.uid),
        gid: first.map_or(0, |a| a.gid),
        dir_perm: first.map_or(0o755, |a| a.perm),
        file_perm: files.first().map_or(0o644, |a| a.perm),
        dirs: ranges(&dirs),
        files: ranges(&files),
        file_spread: std::array::from_fn(|k| median(&spreads, k).max(0)),
        dir_offset: std::array::from_fn(|k| median(&offsets, k)),
    })
}

/// `base` moved later by up to `spread` (per timestamp), plus `offset`;
/// a time outside the range real records of this kind span (`within`) is
/// drawn from that range instead; never changed before it was written
/// (ctime ≥ mtime).
fn near(
    rng: &mut StdRng,
    base: &PlantAttrs,
    offset: [i128; 3],
    spread: [i128; 3],
    within: &[Range; 3],
    perm: u32,
) -> PlantAttrs {
    let t = |rng: &mut StdRng, at: Timespec, k: usize| {
        let n = nanos(at) + offset[k] + rng.random_range(0..=spread[k].max(0));
        if (within[k].lo..=within[k].hi).contains(&n) { from_nanos(n) } else { within[k].draw(rng) }
    };
    let (atime, mtime) = (t(rng, base.atime, 0), t(rng, base.mtime, 1));
    let ctime = changed_after(t(rng, base.ctime, 2), mtime);
    PlantAttrs { uid: base.uid, gid: base.gid, perm, atime, mtime, ctime }
}

fn attrs(rng: &mut StdRng, uid: u32, gid: u32, perm: u32, r: &[Range; 3]) -> PlantAttrs {
    let mtime = r[1].draw(rng);
    let ctime = changed_after(r[2].draw(rng), mtime);
    PlantAttrs { uid, gid, perm, atime: r[0].draw(rng), mtime, ctime }
}

/// Plant `count` decoy patients in vault folder `domain` (its key must be
/// unlocked). Owners and modes copy the real patients of the folder; each
/// decoy's import instant is drawn from the range the real files' times
/// span, and its files and directories cluster around it as a real
/// patient's do, so neither `ls -l` nor `stat` sets them apart. Returns
/// their directory names.
pub fn plant(vault: &Vault, domain: u32, count: u32, request: u64) -> Result<Vec<String>> {
    let root = vault.folder_root(domain)?.ok_or(Error::NotFound)?;
    let root_attrs = vault.getattr(root)?;
    let looks = looks_of(vault, root)?;
    let mut seed = [0u8; 8];
    crate::crypto::random_bytes(&mut seed);
    let mut rng = StdRng::seed_from_u64(u64::from_le_bytes(seed) ^ request);
    let mut names = Vec::new();
    for p in synth_patients(count, rng.random())? {
        // One import per patient: its files' times cluster around one
        // instant drawn from the real range, and its directories sit where
        // real patients' directories sit relative to their files.
        let base = attrs(&mut rng, looks.uid, looks.gid, looks.file_perm, &looks.files);
        let dir_attrs = near(&mut rng, &base, looks.dir_offset, looks.file_spread, &looks.dirs, looks.dir_perm);
        let file_attrs = |rng: &mut StdRng| near(rng, &base, [0; 3], looks.file_spread, &looks.files, looks.file_perm);
        let dir = vault.plant(root, p.dir.as_bytes(), FileKind::Dir, &[], &dir_attrs)?;
        let mut subdirs = std::collections::HashMap::new();
        for f in &p.files {
            let (sub, leaf) = match f.path.rsplit_once('/') {
                Some((s, l)) => (Some(s), l),
                None => (None, f.path.as_str()),
            };
            let parent = match sub {
                None => dir,
                Some(s) => match subdirs.get(s) {
                    Some(&(ino, _)) => ino,
                    None => {
                        let sub_attrs =
                            near(&mut rng, &base, looks.dir_offset, looks.file_spread, &looks.dirs, looks.dir_perm);
                        let ino = vault.plant(dir, s.as_bytes(), FileKind::Dir, &[], &sub_attrs)?;
                        subdirs.insert(s.to_string(), (ino, sub_attrs));
                        ino
                    }
                },
            };
            vault.plant(parent, leaf.as_bytes(), FileKind::File, &f.data, &file_attrs(&mut rng))?;
        }
        // Children changed the directories' times: set them last.
        for (ino, a) in subdirs.values().chain([&(dir, dir_attrs)]) {
            vault.disguise(*ino, a)?;
        }
        names.push(p.dir);
    }
    // Planting must not show in the folder's own times either.
    let keep = PlantAttrs {
        uid: root_attrs.uid,
        gid: root_attrs.gid,
        perm: root_attrs.perm,
        atime: root_attrs.atime,
        mtime: root_attrs.mtime,
        ctime: root_attrs.ctime,
    };
    vault.disguise(root, &keep)?;
    Ok(names)
}
