#!/usr/bin/env bash
# One-time AWS setup for infra/cluster/aws-gpu.yaml, run by an AWS administrator before `ray up`:
#
#   SSH_CIDR=203.0.113.7/32 VPC_ID=vpc-0123 SUBNET_IDS=subnet-0aaa,subnet-0bbb IMAGE_ID=ami-0123 \
#       bash infra/cluster/aws-setup.sh
#
# (AWS_REGION defaults to the CLI's configured region, AWS_ACCOUNT_ID to the caller's account.)
# It renders build/aws/ (infra/cluster/render.py) with the new group's id: the launcher config and
# the head's policy name the same subnets, group, image and instance types.
#
# - the security group `sensorlm-ray-launcher` in VPC_ID: SSH (22) only from SSH_CIDR (never
#   0.0.0.0/0), all traffic between members of the group (Ray's ports), nothing else. Ray's launcher
#   uses a group of its configured name as it is once it has rules (it adds its own default rules,
#   SSH from 0.0.0.0/0 among them, only to a group it creates or finds empty);
# - the roles and instance profiles `sensorlm-ray-head` (infra/cluster/aws-iam-policy.json: launch
#   and terminate this cluster's tagged instances, pass the worker role, the checkpoint bucket) and
#   `sensorlm-ray-worker` (infra/cluster/aws-iam-worker-policy.json: the checkpoint bucket only).
# Ray's default (the profile `ray-autoscaler-v1` with AmazonEC2FullAccess and AmazonS3FullAccess) is
# never created: aws-gpu.yaml names these profiles for every node type.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${SSH_CIDR:?set SSH_CIDR to the address range allowed to SSH to the head (e.g. your office /32)}"
: "${VPC_ID:?set VPC_ID to the VPC the cluster runs in}"
: "${SUBNET_IDS:?set SUBNET_IDS to the comma-separated subnets (of VPC_ID) the nodes start in}"
: "${IMAGE_ID:?set IMAGE_ID to the AMI the nodes start from (e.g. a Deep Learning Base GPU AMI of the region)}"
GROUP="${SENSORLM_SECURITY_GROUP:-sensorlm-ray-launcher}"
PYTHON="${PYTHON:-python3}"
export AWS_REGION="${AWS_REGION:-$(aws configure get region)}"
export AWS_ACCOUNT_ID="${AWS_ACCOUNT_ID:-$(aws sts get-caller-identity --query Account --output text)}"
export SUBNET_IDS IMAGE_ID
out="$(cd "$here/../.." && pwd)/build/aws"
# Every value is checked before anything is created (a stand-in group id until the group exists).
SECURITY_GROUP_ID=sg-00000000 "$PYTHON" "$here/render.py" --out "$(mktemp -d)" >/dev/null

python3 - "$SSH_CIDR" <<'PY'
import ipaddress, sys
net = ipaddress.ip_network(sys.argv[1], strict=True)
if net.prefixlen < 16:
    sys.exit(f"SSH_CIDR={net}: wider than a /16; name the addresses that administer the cluster")
PY

sg_id="$(aws ec2 create-security-group --group-name "$GROUP" --vpc-id "$VPC_ID" \
  --description "sensorlm Ray cluster: SSH from $SSH_CIDR, intra-cluster traffic" --query GroupId --output text)"
aws ec2 authorize-security-group-ingress --group-id "$sg_id" --protocol tcp --port 22 --cidr "$SSH_CIDR"
aws ec2 authorize-security-group-ingress --group-id "$sg_id" \
  --ip-permissions "IpProtocol=-1,UserIdGroupPairs=[{GroupId=$sg_id}]"

SECURITY_GROUP_ID="$sg_id" "$PYTHON" "$here/render.py" --out "$out" >/dev/null

trust='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}'
for role in head worker; do
  policy="$out/aws-iam-policy.json"
  [ "$role" = worker ] && policy="$out/aws-iam-worker-policy.json"
  aws iam create-role --role-name "sensorlm-ray-$role" --assume-role-policy-document "$trust"
  aws iam put-role-policy --role-name "sensorlm-ray-$role" --policy-name "sensorlm-ray-$role" \
    --policy-document "file://$policy"
  aws iam create-instance-profile --instance-profile-name "sensorlm-ray-$role"
  aws iam add-role-to-instance-profile --instance-profile-name "sensorlm-ray-$role" --role-name "sensorlm-ray-$role"
done
echo "security group $GROUP ($sg_id): SSH from $SSH_CIDR only; instance profiles sensorlm-ray-head, sensorlm-ray-worker"
echo "launcher config: ray up $out/aws-gpu.yaml"
