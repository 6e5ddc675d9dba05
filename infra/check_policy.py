#!/usr/bin/env python3
"""Least-privilege check of the IAM policies in a keyturn CloudFormation template.

    python3 infra/check_policy.py infra/keyturn-stack.yaml [--param Name=Value ...]
    python3 infra/check_policy.py infra/member-role.yaml

Needs PyYAML and parliament (`pip install 'cfn-lint>=1,<2' parliament`; cfn-lint
brings PyYAML). What it does:

1. Loads the template with a YAML loader that understands the short-form
   CloudFormation tags (!Ref, !Sub, !GetAtt, !If, ...), then resolves the
   intrinsic functions to concrete strings: parameters to their defaults (or
   --param overrides, or placeholders for empty defaults that name ARNs), and
   resources to realistic placeholder ARNs / names / URLs built from their
   type and name properties (account 123456789012, region eu-west-1).
   A `!If` that chooses a whole policy statement contributes BOTH branches
   (minus AWS::NoValue), so a statement that exists in only one compute mode
   is still checked; any other `!If` takes its true branch.
2. Collects every identity policy (AWS::IAM::ManagedPolicy, AWS::IAM::Policy,
   AWS::IAM::RolePolicy, inline Policies of AWS::IAM::Role), every resource
   policy (KMS key policy, SQS queue policy, SNS topic policy) and every role
   trust policy (AssumeRolePolicyDocument).
3. (a) Fails if an identity policy Allows any action of iam:, kms:, dynamodb:,
   sqs:, sns: or secretsmanager: on Resource "*" (or uses NotResource/NotAction
   in an Allow). Resource policies are exempt: "*" there means "this resource".
   Also fails if an identity policy Allows an access-key action (ListAccessKeys,
   CreateAccessKey, UpdateAccessKey, DeleteAccessKey, GetAccessKeyLastUsed) on
   anything but users under an IAM path of at least one segment
   (arn:...:iam::<account>:user/<path>/...*), or sts:AssumeRole on "*" or on
   every role ("role/*").
4. (b) Runs parliament (with its community auditors) on every identity and
   resource policy and fails on any finding of severity MEDIUM or higher that
   is not in IGNORED below.
5. (c) Fails if a trust policy lets an AWS principal (another account's role)
   assume a role unless it names one principal that is neither "*" nor an
   account root, grants sts:AssumeRole only, and requires both sts:ExternalId
   and aws:PrincipalOrgID (StringEquals). Service principals (ecs-tasks,
   lambda) are exempt: AWS services cannot present an external ID.
6. (d) Prints, per identity policy, the actions it grants and on what.
7. (e) Fails unless every queue that an EventBridge rule of the template
   delivers to (the intake queue) has a queue policy statement that
   explicitly Denies sqs:SendMessage to Principal "*" with nothing but
   negated ARN/string conditions on aws:SourceArn (exactly the template's
   rules that target the queue) and aws:PrincipalArn (whole role or user
   ARNs, no wildcards); also fails on a statement that Allows everyone to
   send there without a condition. The event bus policies (AWS::Events::EventBus
   Policy) are checked by parliament like the other resource policies.

Exit status: 0 clean, 1 findings, 2 usage or template errors.
"""

import argparse
import json
import re
import sys

import yaml

ACCOUNT = "123456789012"
REGION = "eu-west-1"
PARTITION = "aws"

# Services whose actions must never be granted on Resource "*".
SCOPED_SERVICES = ("iam", "kms", "dynamodb", "sqs", "sns", "secretsmanager")

SEVERITY_ORDER = {"LOW": 0, "MEDIUM": 1, "HIGH": 2, "CRITICAL": 3}
FAIL_AT = "MEDIUM"

# Parliament findings accepted on purpose: (issue, policy label, actions, reason).
# A finding is ignored only if its issue and policy match AND every action it
# names is in `actions` (lower case, as parliament reports them), so a new
# action that trips the same check still fails.
IGNORED = [
    ("CREDENTIALS_EXPOSURE", "WorkerPolicy", {"iam:createaccesskey", "iam:updateaccesskey", "sts:assumerole"},
     "creating and (de)activating access keys is the rotation itself; the grant is "
     "confined to users under RotatedUserPath (user${RotatedUserPath}*). sts:AssumeRole "
     "only on roles named MemberRoleName (member-role.yaml), whose trust requires this role, "
     "the external ID and the organisation"),
    ("PRIVILEGE_ESCALATION", "WorkerPolicy", {"iam:createaccesskey"},
     "iam:CreateAccessKey is a known escalation path, hence the IAM path scoping: only "
     "the dedicated integration users keyturn rotates are reachable, never admins"),
    ("PERMISSIONS_MANAGEMENT_ACTIONS", "WorkerPolicy",
     {"iam:createaccesskey", "iam:updateaccesskey", "iam:deleteaccesskey", "kms:creategrant"},
     "access-key actions: see above; kms:CreateGrant only through DynamoDB "
     "(kms:ViaService) and only for AWS resources (kms:GrantIsForAWSResource)"),
    ("PERMISSIONS_MANAGEMENT_ACTIONS", "Key",
     {"kms:putkeypolicy", "kms:revokegrant", "kms:createkey", "kms:creategrant", "kms:retiregrant"},
     "the AccountAdministers statement (account root, kms:*) is KMS's default key policy "
     "statement; without it the key could become unmanageable. It only lets IAM policies "
     "of this account grant use of the key"),
    ("PERMISSIONS_MANAGEMENT_ACTIONS", "TopicKey",
     {"kms:putkeypolicy", "kms:revokegrant", "kms:createkey", "kms:creategrant", "kms:retiregrant"},
     "the same default AccountAdministers statement as Key, on the topic's key"),
    ("CREDENTIALS_EXPOSURE", "MemberRole/rotate-access-keys-under-path", {"iam:createaccesskey", "iam:updateaccesskey"},
     "member accounts (member-role.yaml): the same access-key actions as the hub's worker, "
     "confined the same way to users under RotatedUserPath in that account"),
    ("PRIVILEGE_ESCALATION", "MemberRole/rotate-access-keys-under-path", {"iam:createaccesskey"},
     "member accounts: iam:CreateAccessKey only on users under RotatedUserPath, and the role "
     "trusts only the hub's worker role with the external ID, inside the organisation"),
    ("PERMISSIONS_MANAGEMENT_ACTIONS", "MemberRole/rotate-access-keys-under-path",
     {"iam:createaccesskey", "iam:updateaccesskey", "iam:deleteaccesskey"},
     "member accounts: access-key actions confined to users under RotatedUserPath"),
    ("CREDENTIALS_EXPOSURE", "TaskExecutionRole/pull-image-and-log", {"ecr:getauthorizationtoken"},
     "ECS needs a registry token to pull the image; the action has no resource type, and "
     "the execution role is used by the ECS agent only, never by the worker's code"),
]

# Placeholders for parameters whose default is empty (or absent) but whose
# value ends up in a policy, so that the statement is analysed with a
# realistic value.
PARAM_PLACEHOLDERS = {
    "ReferencedSecretArns": [
        f"arn:{PARTITION}:secretsmanager:{REGION}:{ACCOUNT}:secret:keyturn/auth0-AbCdEf",
    ],
    # member-role.yaml: the hub account's worker role, another account.
    "HubWorkerRoleArn": f"arn:{PARTITION}:iam::111111111111:role/keyturn-worker",
    "ExternalId": "keyturn-7f3a9c2e",
    "OrganizationId": "o-a1b2c3d4e5",
    "TargetSecretArns": [
        f"arn:{PARTITION}:secretsmanager:{REGION}:{ACCOUNT}:secret:app/aws-AbCdEf",
    ],
    "RequesterPrincipalArns": [
        f"arn:{PARTITION}:iam::{ACCOUNT}:role/rotation-requester",
    ],
}

# What each connector that calls AWS needs of the worker role (the calls in
# worker/src/connectors/*.rs), and which identity policy of the stack must
# grant it. A connector added with AWS calls belongs here.
CONNECTOR_ACTIONS = {
    "source iam_access_key": ({"iam:listaccesskeys", "iam:createaccesskey", "iam:updateaccesskey", "iam:deleteaccesskey",
                               "iam:getaccesskeylastused", "sts:getcalleridentity", "sts:assumerole"}, "WorkerPolicy"),
    "target secrets_manager_secret": ({"secretsmanager:getsecretvalue", "secretsmanager:putsecretvalue"},
                                      "WorkerTargetSecretsPolicy"),
}

# Access-key actions: only on users under a path (see star_violations).
ACCESS_KEY_ACTIONS = {"iam:listaccesskeys", "iam:createaccesskey", "iam:updateaccesskey",
                      "iam:deleteaccesskey", "iam:getaccesskeylastused"}
USER_UNDER_PATH = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:user/[A-Za-z0-9_+=,.@-]+/([A-Za-z0-9_+=,.@-]+/)*\*$")


# --------------------------------------------------------------- loading --
class CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns !Tag nodes into their long-form dicts."""


def _construct_tag(loader, tag_suffix, node):
    name = "Ref" if tag_suffix == "Ref" else "Fn::" + tag_suffix
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if name == "Fn::GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path):
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass


# ------------------------------------------------------------- resolving --
class NoValue:
    pass


NO_VALUE = NoValue()


class Resolver:
    def __init__(self, template, overrides):
        self.t = template
        self.params = {}
        for name, spec in (template.get("Parameters") or {}).items():
            if name in overrides:
                value = overrides[name]
            else:
                value = spec.get("Default", "")
            if spec.get("Type") == "CommaDelimitedList":
                value = value if isinstance(value, list) else [v.strip() for v in str(value).split(",")]
                if value == [""] and name in PARAM_PLACEHOLDERS and name not in overrides:
                    value = PARAM_PLACEHOLDERS[name]
            elif value == "" and name in PARAM_PLACEHOLDERS and name not in overrides:
                value = PARAM_PLACEHOLDERS[name]
            self.params[name] = value
        self.pseudo = {
            "AWS::AccountId": ACCOUNT,
            "AWS::Region": REGION,
            "AWS::Partition": PARTITION,
            "AWS::StackName": "keyturn",
            "AWS::URLSuffix": "amazonaws.com",
        }

    # Names and ARNs of resources, from their type and name property.
    def _name(self, logical, prop):
        props = self.t["Resources"][logical].get("Properties") or {}
        return self.resolve(props[prop]) if prop in props else logical

    def ref(self, name):
        if name in self.pseudo:
            return self.pseudo[name]
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.params:
            return self.params[name]
        res = self.t["Resources"].get(name)
        if res is None:
            raise KeyError(f"Ref to unknown {name}")
        rtype = res["Type"]
        if rtype == "AWS::SQS::Queue":
            return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{self._name(name, 'QueueName')}"
        if rtype == "AWS::SNS::Topic":
            return f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT}:{self._name(name, 'TopicName')}"
        if rtype == "AWS::KMS::Key":
            return "1234abcd-12ab-34cd-56ef-1234567890ab"
        if rtype == "AWS::DynamoDB::Table":
            return self._name(name, "TableName")
        if rtype == "AWS::Logs::LogGroup":
            return self._name(name, "LogGroupName")
        if rtype == "AWS::IAM::Role":
            return self._name(name, "RoleName")
        if rtype == "AWS::Lambda::Function":
            return self._name(name, "FunctionName")
        if rtype == "AWS::Events::EventBus":
            return self._name(name, "Name")
        return name

    def getatt(self, logical, attr):
        res = self.t["Resources"].get(logical)
        if res is None:
            raise KeyError(f"GetAtt on unknown {logical}")
        rtype = res["Type"]
        arns = {
            "AWS::SQS::Queue": lambda: f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT}:{self._name(logical, 'QueueName')}",
            "AWS::DynamoDB::Table": lambda: f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{self._name(logical, 'TableName')}",
            "AWS::KMS::Key": lambda: f"arn:{PARTITION}:kms:{REGION}:{ACCOUNT}:key/{self.ref(logical)}",
            "AWS::Logs::LogGroup": lambda: f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:{self._name(logical, 'LogGroupName')}:*",
            "AWS::IAM::Role": lambda: f"arn:{PARTITION}:iam::{ACCOUNT}:role/{self._name(logical, 'RoleName')}",
            # A rule on a bus other than the default one: rule/<bus>/<name>.
            "AWS::Events::Rule": lambda: f"arn:{PARTITION}:events:{REGION}:{ACCOUNT}:rule/"
                                         + "".join(f"{b}/" for b in [self._name(logical, 'EventBusName')]
                                                   if b not in ("default", "EventBusName"))
                                         + self._name(logical, 'Name'),
            "AWS::Lambda::Function": lambda: f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{self._name(logical, 'FunctionName')}",
            # api-destination/<name>/<uuid EventBridge assigns>
            "AWS::Events::ApiDestination": lambda: f"arn:{PARTITION}:events:{REGION}:{ACCOUNT}:api-destination/"
                                                   f"{self._name(logical, 'Name')}/00000000-0000-0000-0000-000000000000",
        }
        if attr == "Arn" and rtype in arns:
            return arns[rtype]()
        return f"arn:{PARTITION}:placeholder:{REGION}:{ACCOUNT}:{logical}/{attr}"

    def sub(self, arg):
        if isinstance(arg, list):
            text, local = arg[0], {k: self.resolve(v) for k, v in arg[1].items()}
        else:
            text, local = arg, {}

        def repl(m):
            key = m.group(1)
            if key.startswith("!"):
                return "${" + key[1:] + "}"
            if key in local:
                return str(local[key])
            if "." in key and key.split(".", 1)[0] in self.t["Resources"]:
                return str(self.getatt(*key.split(".", 1)))
            value = self.ref(key)
            if isinstance(value, list):
                return ",".join(value)
            return str(value)

        return re.sub(r"\$\{([^}]+)\}", repl, text)

    def resolve(self, node):
        if isinstance(node, list):
            out = []
            for item in node:
                if isinstance(item, dict) and set(item) == {"Fn::If"}:
                    # A conditional element of a list: keep both branches.
                    for branch in item["Fn::If"][1:]:
                        value = self.resolve(branch)
                        if value is not NO_VALUE:
                            out.append(value)
                    continue
                value = self.resolve(item)
                if value is not NO_VALUE:
                    out.append(value)
            return out
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                logical, attr = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.getatt(logical, attr)
            if key == "Fn::Sub":
                return self.sub(arg)
            if key == "Fn::Join":
                parts = self.resolve(arg[1])
                return arg[0].join(str(p) for p in parts)
            if key == "Fn::If":
                return self.resolve(arg[1])
            if key == "Fn::Select":
                return self.resolve(arg[1])[int(self.resolve(arg[0]))]
            if key == "Fn::Split":
                return str(self.resolve(arg[1])).split(arg[0])
            if key.startswith("Fn::"):
                raise ValueError(f"unsupported intrinsic {key}")
        out = {}
        for k, v in node.items():
            value = self.resolve(v)
            if value is not NO_VALUE:
                out[k] = value
        return out


# ------------------------------------------------------------ collecting --
def collect_policies(template, resolver):
    """[(label, kind, document)] with kind 'identity' or 'resource'."""
    found = []
    for logical, res in (template.get("Resources") or {}).items():
        rtype = res.get("Type")
        props = res.get("Properties") or {}
        if rtype in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy", "AWS::IAM::RolePolicy"):
            found.append((logical, "identity", resolver.resolve(props["PolicyDocument"])))
        elif rtype == "AWS::IAM::Role":
            if "AssumeRolePolicyDocument" in props:
                found.append((f"{logical}/trust", "trust", resolver.resolve(props["AssumeRolePolicyDocument"])))
            for pol in props.get("Policies") or []:
                pol = resolver.resolve(pol)
                found.append((f"{logical}/{pol.get('PolicyName')}", "identity", pol["PolicyDocument"]))
        elif rtype == "AWS::KMS::Key" and "KeyPolicy" in props:
            found.append((logical, "resource", resolver.resolve(props["KeyPolicy"])))
        elif rtype in ("AWS::SQS::QueuePolicy", "AWS::SNS::TopicPolicy"):
            found.append((logical, "resource", resolver.resolve(props["PolicyDocument"])))
        elif rtype == "AWS::Events::EventBus" and "Policy" in props:
            found.append((logical, "resource", resolver.resolve(props["Policy"])))
    return found


def as_list(value):
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


# ---------------------------------------------------------------- checks --
def star_violations(label, doc):
    problems = []
    for i, st in enumerate(as_list(doc.get("Statement"))):
        if st.get("Effect") != "Allow":
            continue
        sid = st.get("Sid", f"#{i}")
        if "NotAction" in st or "NotResource" in st:
            problems.append(f"{label}/{sid}: Allow with NotAction/NotResource")
            continue
        actions = as_list(st.get("Action"))
        resources = as_list(st.get("Resource"))
        for action in actions:
            if action.lower() in ACCESS_KEY_ACTIONS:
                for r in resources:
                    if not USER_UNDER_PATH.match(str(r)):
                        problems.append(f"{label}/{sid}: {action} on {r}: access keys only of users under an IAM path")
            if action.lower() in ("sts:assumerole", "sts:*"):
                for r in resources:
                    if r == "*" or str(r).endswith(":role/*"):
                        problems.append(f"{label}/{sid}: {action} on {r}: name the role to assume")
        if any(a.lower() in ("sts:assumerole", "sts:*") for a in actions):
            equals = (st.get("Condition") or {}).get("StringEquals") or {}
            scoped = any(k.lower() in ("aws:resourceorgid", "aws:resourceaccount") and v not in ("", [], [""], None)
                         for k, v in equals.items())
            if not scoped:
                problems.append(f"{label}/{sid}: sts:AssumeRole without a StringEquals condition on aws:ResourceOrgID "
                                f"or aws:ResourceAccount (any account's role of that name could be assumed)")
        if "*" not in resources:
            continue
        for action in actions:
            service = action.split(":", 1)[0].lower() if ":" in action else "*"
            if action == "*" or service in SCOPED_SERVICES:
                problems.append(f"{label}/{sid}: {action} on Resource \"*\"")
    return problems


INTAKE_SEND_EXEMPT_KEYS = {"aws:sourcearn", "aws:principalarn"}
NEGATED_ARN_OPERATORS = {"arnnotequals", "arnnotlike", "stringnotequals", "stringnotlike", "arnnotequalsifexists",
                         "arnnotlikeifexists", "stringnotequalsifexists", "stringnotlikeifexists"}


def intake_queue_violations(template, resolver):
    """The queues EventBridge rules deliver to (the intake queue) must deny
    sqs:SendMessage explicitly to every principal except the template's own
    rules (aws:SourceArn) and named principals (aws:PrincipalArn), and no
    statement may allow sending to everyone.

    A Deny counts only if it names Principal "*", covers sqs:SendMessage on the
    queue, and its Condition holds nothing but negated ARN/string operators on
    aws:SourceArn and aws:PrincipalArn: any other condition (say, a Bool on
    aws:SecureTransport, or a positive operator) would narrow the Deny to some
    requests only. The aws:SourceArn values must be exactly ARNs of rules in
    this template that target the queue (a wildcard would exempt any rule of
    any account), and the aws:PrincipalArn values must be whole ARNs of roles
    or users, without wildcards."""
    resources = template.get("Resources") or {}
    rule_targets = {}  # queue ARN -> ARNs of the rules that deliver to it
    for logical, res in resources.items():
        if res.get("Type") != "AWS::Events::Rule":
            continue
        props = resolver.resolve(res.get("Properties") or {})
        rule_arn = resolver.getatt(logical, "Arn")
        for target in as_list(props.get("Targets")):
            arn = str(target.get("Arn", ""))
            if arn.startswith(f"arn:{PARTITION}:sqs:"):
                rule_targets.setdefault(arn, set()).add(rule_arn)
    if not rule_targets:
        return [], []
    docs = {}  # queue ARN -> [(policy label, statement)]
    for logical, res in resources.items():
        if res.get("Type") != "AWS::SQS::QueuePolicy":
            continue
        doc = resolver.resolve(res["Properties"]["PolicyDocument"])
        for st in as_list(doc.get("Statement")):
            for r in as_list(st.get("Resource")):
                docs.setdefault(str(r), []).append((logical, st))
    problems, report = [], []
    for queue, rules in sorted(rule_targets.items()):
        denies, passed_over = [], []
        for label, st in docs.get(queue, []):
            sid = st.get("Sid", "?")
            actions = {a.lower() for a in as_list(st.get("Action"))}
            sends = bool(actions & {"sqs:sendmessage", "sqs:*", "*"})
            everyone = st.get("Principal") == "*" or (isinstance(st.get("Principal"), dict)
                                                       and "*" in as_list(st["Principal"].get("AWS")))
            if st.get("Effect") == "Allow" and sends and everyone and not st.get("Condition"):
                problems.append(f"{label}/{sid}: allows everyone to send to {queue}")
            if st.get("Effect") != "Deny" or not sends or not everyone:
                continue
            keys, narrowing = {}, []
            for op, pairs in (st.get("Condition") or {}).items():
                for key, values in (pairs or {}).items():
                    if op.lower() not in NEGATED_ARN_OPERATORS or key.lower() not in INTAKE_SEND_EXEMPT_KEYS:
                        narrowing.append(f"{op} {key}")
                    else:
                        keys.setdefault(key.lower(), []).extend(str(v) for v in as_list(values))
            sources = keys.get("aws:sourcearn", [])
            principals = keys.get("aws:principalarn", [])
            stray = [v for v in sources if v not in rules]
            loose = [v for v in principals
                     if "*" in v or "?" in v or not re.match(r"^arn:aws[a-z-]*:iam::\d{12}:(role|user)/", v)]
            if narrowing:
                # e.g. DenyInsecureTransport: a Deny for some requests only.
                passed_over.append(f"{label}/{sid} (only when {narrowing})")
            elif not sources:
                passed_over.append(f"{label}/{sid} (exempts no rule by aws:SourceArn: it would also block the rules)")
            elif stray:
                problems.append(f"{label}/{sid}: aws:SourceArn exempts {stray}, which are not this template's rules "
                                f"delivering to {queue}")
            elif loose:
                problems.append(f"{label}/{sid}: aws:PrincipalArn exempts {loose}: name whole role or user ARNs")
            else:
                denies.append(f"{label}/{sid}")
                report.append(f"== intake queue {queue}: sqs:SendMessage denied to all but {len(sources)} rule(s)"
                              f" and {len(principals)} principal(s) ({label}/{sid})")
        if not denies:
            problems.append(f"{queue}: EventBridge rules deliver here but no queue policy explicitly denies "
                            f"sqs:SendMessage to every other principal (a Deny on Principal \"*\" with ArnNotEquals "
                            f"on aws:SourceArn, and aws:PrincipalArn for requesters)"
                            + (f"; not such a Deny: {passed_over}" if passed_over else ""))
    return problems, report


ACCOUNT_ROOT = re.compile(r"^(\d{12}|arn:aws[a-z-]*:iam::\d{12}:root)$")


def trust_violations(label, doc):
    """Cross-account trust must be narrow: one named principal (not "*", not
    an account root), sts:AssumeRole only, and both sts:ExternalId and
    aws:PrincipalOrgID required. Statements trusting AWS services only are
    exempt (services present no external ID)."""
    problems = []
    for i, st in enumerate(as_list(doc.get("Statement"))):
        if st.get("Effect") != "Allow":
            continue
        sid = st.get("Sid", f"#{i}")
        principal = st.get("Principal")
        if principal == "*" or (isinstance(principal, dict) and "*" in as_list(principal.get("AWS"))):
            problems.append(f"{label}/{sid}: trusts every principal (\"*\")")
            continue
        if "NotPrincipal" in st:
            problems.append(f"{label}/{sid}: Allow with NotPrincipal")
            continue
        aws_principals = as_list(principal.get("AWS")) if isinstance(principal, dict) else []
        if not aws_principals:
            continue  # service or federated principals only
        if len(aws_principals) != 1 or ACCOUNT_ROOT.match(str(aws_principals[0])):
            problems.append(f"{label}/{sid}: trust one named role, not {aws_principals}")
        if [a.lower() for a in as_list(st.get("Action"))] != ["sts:assumerole"]:
            problems.append(f"{label}/{sid}: trust grants {as_list(st.get('Action'))}, expected only sts:AssumeRole")
        equals = (st.get("Condition") or {}).get("StringEquals") or {}
        for key in ("sts:ExternalId", "aws:PrincipalOrgID"):
            if not any(k.lower() == key.lower() and v not in ("", [], None) for k, v in equals.items()):
                problems.append(f"{label}/{sid}: trust without a StringEquals condition on {key}")
    return problems


_COMMUNITY_CONFIG_LOADED = False


def parliament_findings(label, doc):
    import os

    import parliament  # imported here so --help works without it

    global _COMMUNITY_CONFIG_LOADED
    if not _COMMUNITY_CONFIG_LOADED:
        # As parliament's CLI does for --include-community-auditors: register
        # the community findings' severities before analysing.
        parliament.override_config(os.path.join(
            os.path.dirname(parliament.__file__), "community_auditors", "config_override.yaml"))
        _COMMUNITY_CONFIG_LOADED = True
    policy = parliament.analyze_policy_string(json.dumps(doc), include_community_auditors=True)
    out = []
    for f in policy.findings:
        f = parliament.enhance_finding(f)
        out.append((f.issue, (f.severity or "LOW").upper(), f.detail, f.location))
    return out


def ignored(issue, label, detail, location):
    # Community auditors report the actions in `location`, others in `detail`.
    named = set()
    for part in (detail, location):
        if isinstance(part, dict):
            named |= {a.lower() for a in part.get("actions", [])}
    for code, where, actions, reason in IGNORED:
        if code == issue and label == where and named and named <= actions:
            return reason
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("template")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="override a parameter (lists: comma-separated)")
    ap.add_argument("--emit-widened", metavar="LOGICAL_ID[,LOGICAL_ID...]",
                    help="print those identity policies merged into one JSON policy with every Resource widened to '*' and "
                         "Conditions dropped, its actions kept exactly (for the moto permission test: "
                         "moto checks actions but does not match resource ARNs), and exit")
    args = ap.parse_args(argv)

    overrides = {}
    for p in args.param:
        if "=" not in p:
            ap.error(f"--param needs NAME=VALUE, got {p!r}")
        k, v = p.split("=", 1)
        overrides[k] = v

    try:
        template = load_template(args.template)
        resolver = Resolver(template, overrides)
        policies = collect_policies(template, resolver)
    except (OSError, yaml.YAMLError, KeyError, ValueError) as e:
        print(f"error: {args.template}: {e}", file=sys.stderr)
        return 2
    if args.emit_widened:
        wanted = args.emit_widened.split(",")
        docs = [doc for label, kind, doc in policies if kind == "identity" and label in wanted]
        if len(docs) != len(wanted):
            print(f"error: not all of {wanted} are identity policies here", file=sys.stderr)
            return 2
        statements = [
            {"Sid": st.get("Sid", f"S{i}"), "Effect": st["Effect"], "Action": as_list(st.get("Action")), "Resource": "*"}
            for doc in docs
            for i, st in enumerate(as_list(doc.get("Statement")))
            if st.get("Effect") == "Allow"
        ]
        print(json.dumps({"Version": "2012-10-17", "Statement": statements}))
        return 0
    if not any(kind == "identity" for _, kind, _ in policies):
        print(f"error: {args.template}: no IAM policy found", file=sys.stderr)
        return 2

    failures, report = intake_queue_violations(template, resolver)
    for line in report:
        print(line)
    granted = {}
    for label, kind, doc in policies:
        if kind == "identity":
            for st in as_list(doc.get("Statement")):
                if st.get("Effect") == "Allow":
                    granted.setdefault(label, set()).update(a.lower() for a in as_list(st.get("Action")))
    if "WorkerPolicy" in granted:
        for connector, (actions, policy) in CONNECTOR_ACTIONS.items():
            missing = sorted(actions - granted.get(policy, set()))
            print(f"== {connector}: {', '.join(sorted(actions))} granted by {policy}"
                  + (f" -- MISSING {missing}" if missing else ""))
            if missing:
                failures.append(f"{connector}: {policy} does not grant {missing}")
    for label, kind, doc in policies:
        print(f"== {label} ({kind} policy)")
        if kind == "trust":
            for i, st in enumerate(as_list(doc.get("Statement"))):
                print(f"  {st.get('Effect')} {st.get('Sid', '#' + str(i))}: {st.get('Principal')} {as_list(st.get('Action'))}"
                      f"{' if ' + json.dumps(st['Condition']) if st.get('Condition') else ''}")
            failures += trust_violations(label, doc)
            continue
        if kind == "identity":
            for i, st in enumerate(as_list(doc.get("Statement"))):
                cond = " [conditional]" if st.get("Condition") else ""
                print(f"  {st.get('Effect')} {st.get('Sid', '#' + str(i))}{cond}")
                for a in as_list(st.get("Action")):
                    print(f"      {a}")
                for r in as_list(st.get("Resource")):
                    print(f"        on {r}")
            failures += star_violations(label, doc)
        for issue, severity, detail, location in parliament_findings(label, doc):
            reason = ignored(issue, label, detail, location)
            tag = "ignored" if reason else severity
            line = f"  parliament {tag}: {issue} {detail} {location or ''}".rstrip()
            if reason:
                line += f" -- {reason}"
            print(line)
            if not reason and SEVERITY_ORDER.get(severity, 3) >= SEVERITY_ORDER[FAIL_AT]:
                failures.append(f"{label}: parliament {severity} {issue}: {detail}")

    if failures:
        print("\nFAILED:")
        for f in failures:
            print(f"  {f}")
        return 1
    print(f"\nOK: {sum(1 for _, k, _ in policies if k == 'identity')} identity, "
          f"{sum(1 for _, k, _ in policies if k == 'resource')} resource and "
          f"{sum(1 for _, k, _ in policies if k == 'trust')} trust policies checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
