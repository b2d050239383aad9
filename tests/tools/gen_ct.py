#!/usr/bin/env python3
"""Generate a synthetic, fully deterministic CT study (no real patient data).

    gen_ct.py OUTDIR [--seed N] [--slices N] [--size N] [--no-reports]

Writes OUTDIR/CT000001.dcm ... (one CT Image Storage instance per slice, explicit VR
little endian, 512x512 signed 16-bit by default) and, unless --no-reports, a plain-text
report and a FHIR R4 DiagnosticReport (JSON) under OUTDIR/reports/.

The same seed always yields byte-identical files (UIDs are derived from the seed, dates
are fixed, the pixel noise comes from numpy's seeded PCG64), so a copy generated on
local disk can be compared byte-for-byte with one generated onto a filesystem under test.
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian


def _uid(*parts):
    """Deterministic 2.25.<128-bit int> UID (PS3.5 B.2) hashed from the given labels.
    (pydicom's generate_uid(prefix=None) ignores entropy_srcs and is random.)"""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()[:16]
    return "2.25.%d" % int.from_bytes(h, "big")


def uid(seed, *parts):
    return _uid("fogvault-synthetic-ct", seed, *parts)


# Fixed implementation identity so the file meta header does not depend on pydicom's version.
IMPL_CLASS_UID = _uid("fogvault-gen_ct-implementation")
IMPL_VERSION = "FOGVAULT_GENCT1"


def phantom(size, z, nz, rng):
    """A crude chest-like phantom in Hounsfield units: body, lungs, spine, heart, noise."""
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    x = (xx - c) / (size / 2.0)
    y = (yy - c) / (size / 2.0)
    t = z / max(nz - 1, 1)  # 0 at the first slice, 1 at the last
    hu = np.full((size, size), -1000.0, dtype=np.float32)  # air
    body = (x / 0.85) ** 2 + (y / (0.62 + 0.05 * np.sin(np.pi * t))) ** 2 <= 1.0
    hu[body] = 40.0  # soft tissue
    fat = body & ((x / 0.80) ** 2 + (y / 0.57) ** 2 > 1.0)
    hu[fat] = -90.0
    lung_r = 0.25 + 0.12 * np.sin(np.pi * t)
    for sx in (-0.38, 0.38):
        lung = ((x - sx) / lung_r) ** 2 + ((y + 0.05) / (lung_r * 1.5)) ** 2 <= 1.0
        hu[lung & body] = -850.0
    heart = ((x - 0.08) / 0.2) ** 2 + ((y + 0.05) / 0.18) ** 2 <= 1.0
    if 0.3 < t < 0.75:
        hu[heart] = 55.0
    spine = (x / 0.09) ** 2 + ((y - 0.42) / 0.09) ** 2 <= 1.0
    hu[spine] = 700.0
    canal = (x / 0.035) ** 2 + ((y - 0.42) / 0.035) ** 2 <= 1.0
    hu[canal] = 20.0
    hu += rng.normal(0.0, 12.0, size=(size, size)).astype(np.float32)
    return hu


def make_slice(args, i, rng, common):
    inst = i + 1
    sop_uid = uid(args.seed, "sop", inst)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPL_CLASS_UID
    meta.ImplementationVersionName = IMPL_VERSION

    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    for k, v in common.items():
        setattr(ds, k, v)
    ds.AcquisitionTime = "%06d.%03d" % (101500 + (i // 60) * 100 + i % 60, (i * 37) % 1000)
    ds.ContentTime = ds.AcquisitionTime
    ds.InstanceNumber = inst
    z = args.z0 - i * args.thickness
    ds.ImagePositionPatient = [round(-args.fov / 2.0, 4), round(-args.fov / 2.0, 4), round(z, 4)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = round(z, 4)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = args.size
    ds.Columns = args.size
    ds.PixelSpacing = [round(args.fov / args.size, 6)] * 2
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.WindowCenter = [40, -600]
    ds.WindowWidth = [400, 1500]
    ds.WindowCenterWidthExplanation = ["MEDIASTINUM", "LUNG"]
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    hu = phantom(args.size, i, args.slices, rng)
    stored = np.clip(np.rint(hu + 1024.0), -2048, 32767).astype("<i2")
    ds.SmallestImagePixelValue = int(stored.min())
    ds.LargestImagePixelValue = int(stored.max())
    # SmallestImagePixelValue/LargestImagePixelValue are US/SS; signed pixels -> SS
    ds["SmallestImagePixelValue"].VR = "SS"
    ds["LargestImagePixelValue"].VR = "SS"
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--slices", type=int, default=200)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--thickness", type=float, default=1.25)
    ap.add_argument("--fov", type=float, default=380.0, help="reconstruction diameter in mm")
    ap.add_argument("--z0", type=float, default=-50.0)
    ap.add_argument("--no-reports", action="store_true")
    args = ap.parse_args()

    os.makedirs(args.outdir, exist_ok=True)
    s = args.seed
    rng = np.random.default_rng(s)
    study_uid = uid(s, "study")
    series_uid = uid(s, "series")
    pid = "FVSYN%06d" % (s % 1000000)
    pname = "SYNTHETIC^PATIENT%d" % s
    accession = "FVACC%07d" % (s % 10000000)
    study_date = "2024%02d%02d" % (1 + s % 12, 1 + s % 28)
    common = dict(
        StudyDate=study_date, SeriesDate=study_date, AcquisitionDate=study_date, ContentDate=study_date,
        StudyTime="101500.000", SeriesTime="101512.000",
        AccessionNumber=accession, Modality="CT",
        Manufacturer="FogVault Synthetic", InstitutionName="Synthetic Test Hospital",
        ReferringPhysicianName="SYNTHETIC^REFERRER", StationName="FVSYNCT01",
        StudyDescription="CT CHEST W/O CONTRAST (SYNTHETIC)", SeriesDescription="AXIAL 1.25mm STANDARD",
        ManufacturerModelName="PhantomScan 9000",
        PatientName=pname, PatientID=pid, PatientBirthDate="19700101", PatientSex="O", PatientAge="054Y",
        PatientIdentityRemoved="YES", DeidentificationMethod="Synthetic data generated by fogvault gen_ct.py",
        BodyPartExamined="CHEST", SliceThickness=args.thickness, KVP=120, DataCollectionDiameter=500,
        SoftwareVersions="gen_ct 1", ReconstructionDiameter=args.fov, DistanceSourceToDetector=1040.0,
        DistanceSourceToPatient=570.0, GantryDetectorTilt=0, TableHeight=160.0, RotationDirection="CW",
        ExposureTime=500, XRayTubeCurrent=250, Exposure=125, FilterType="BODY FILTER",
        GeneratorPower=30, FocalSpots=1.2, ConvolutionKernel="STANDARD", PatientPosition="HFS",
        StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid, StudyID="1", SeriesNumber=2,
        AcquisitionNumber=1, FrameOfReferenceUID=uid(s, "for"), PositionReferenceIndicator="SN",
    )
    for i in range(args.slices):
        ds = make_slice(args, i, rng, common)
        path = os.path.join(args.outdir, "CT%06d.dcm" % (i + 1))
        ds.save_as(path, enforce_file_format=True)

    if not args.no_reports:
        rdir = os.path.join(args.outdir, "reports")
        os.makedirs(rdir, exist_ok=True)
        text = (
            "SYNTHETIC TEST REPORT - NOT A REAL PATIENT\n"
            f"Patient: {pname}  ID: {pid}  Accession: {accession}\n"
            f"Study: CT chest without contrast, {args.slices} axial slices, {args.thickness} mm\n"
            f"StudyInstanceUID: {study_uid}\n\n"
            "FINDINGS: Synthetic phantom. Lungs are clear. No effusion. Osseous structures intact.\n"
            "IMPRESSION: No acute abnormality (synthetic).\n"
        )
        with open(os.path.join(rdir, "report.txt"), "w", encoding="utf-8") as f:
            f.write(text)
        fhir = {
            "resourceType": "DiagnosticReport",
            "id": "fvsyn-%d" % s,
            "meta": {"tag": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HTEST"}]},
            "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "24627-2", "display": "Chest CT"}]},
            "subject": {"identifier": {"system": "urn:fogvault:synthetic", "value": pid}, "display": pname},
            "effectiveDateTime": "%s-%s-%sT10:15:00Z" % (study_date[:4], study_date[4:6], study_date[6:]),
            "imagingStudy": [{"identifier": {"system": "urn:dicom:uid", "value": "urn:oid:" + study_uid}}],
            "conclusion": "No acute abnormality (synthetic).",
            "presentedForm": [{"contentType": "text/plain", "title": "report.txt"}],
        }
        with open(os.path.join(rdir, "diagnosticreport.json"), "w", encoding="utf-8") as f:
            json.dump(fhir, f, indent=2, sort_keys=True)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
