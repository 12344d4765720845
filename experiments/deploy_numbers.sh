#!/usr/bin/env bash
# The numbers in docs/deploy.md ("Measured here"): export the quick students
# (experiments/quick_students.py) at fp32 and int8, verify every artifact on ORL (never used for
# training, calibration or the threshold) and benchmark them beside PyTorch eager.
# Calibration: 32 wild5 faces (aligned with their 5 points); threshold: Yale pairs.
# fp16 and Core ML int8 parity is covered by tests/test_convert_export.py.
#   nice -n 10 bash experiments/deploy_numbers.sh [runs/quick_students] [runs/deploy]
set -euo pipefail
students=${1:-runs/quick_students}
out=${2:-runs/deploy}
data=../shared/data
art="$out/artifacts"
common=(--pairs "$data/yale" --out "$art")
int8=(--precision int8 --calib "$data/wild5" --calib-count 32)
lafs-edge export "$students/part_fvit_tiny.pt" --target all --precision fp32 "${common[@]}"
lafs-edge export "$students/part_fvit_tiny.pt" --target openvino,tflite "${int8[@]}" "${common[@]}"
lafs-edge export "$students/mobilefacenet.pt" --target onnx,openvino,tflite --precision fp32 "${common[@]}"
lafs-edge export "$students/mobilefacenet.pt" --target openvino,tflite "${int8[@]}" "${common[@]}"
status=0
for artifact in "$art"/*/; do
  lafs-edge verify "$artifact" --data "$data/orl" --json "${artifact%/}.verify.json" || status=1
done
lafs-edge bench "$art"/*-{onnx,openvino,tflite}-*/ --out "$out/bench"
exit $status
