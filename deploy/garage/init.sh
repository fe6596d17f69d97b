#!/bin/sh
# garage-init (deploy/compose.s3.yaml): makes the one Garage node of the try-out usable, once.
# Runs the garage CLI against the node (garage.toml: rpc_public_addr, rpc_secret; the node's
# public key from the metadata volume), and is harmless to run again: each step checks first.
#
#   1. the layout: this node in zone dc1 with 1 GB (a single node has nothing to balance);
#   2. the access key the chorus services use (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
#      imported rather than generated, so compose.s3.yaml can name it);
#   3. the bucket $BUCKET, which that key may read, write and own.
#
# Environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, BUCKET.
set -eu
: "${AWS_ACCESS_KEY_ID:?}" "${AWS_SECRET_ACCESS_KEY:?}" "${BUCKET:?}"

# The node answers RPC (its healthcheck said so already; this covers a slow first start).
tries=0
until garage status >/dev/null 2>&1; do
  tries=$((tries + 1))
  [ "$tries" -lt 60 ] || { echo "garage-init: the Garage node does not answer" >&2; garage status; exit 1; }
  sleep 1
done

if garage layout show | grep -q 'Current cluster layout version: 0$'; then
  # `garage node id -q` prints ID@ADDRESS.
  id="$(garage node id -q | cut -d@ -f1)"
  garage layout assign -z dc1 -c 1G "$id"
  garage layout apply --version 1
else
  echo "garage-init: the layout is applied already"
fi

if garage key info "$AWS_ACCESS_KEY_ID" >/dev/null 2>&1; then
  echo "garage-init: key $AWS_ACCESS_KEY_ID exists"
else
  garage key import --yes -n chorus-demo "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY"
fi

if garage bucket info "$BUCKET" >/dev/null 2>&1; then
  echo "garage-init: bucket $BUCKET exists"
else
  garage bucket create "$BUCKET"
fi
garage bucket allow --read --write --owner "$BUCKET" --key "$AWS_ACCESS_KEY_ID"
echo "garage-init: done: s3://$BUCKET, key $AWS_ACCESS_KEY_ID"
