#!/bin/bash -eu
# ClusterFuzzLite uses the same build as OSS-Fuzz.
exec "$SRC/lazymmu-rig/oss-fuzz/build.sh"
