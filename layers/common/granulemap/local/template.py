"""Read template.yaml the way the local engine needs it: each function's code, handler and environment, and the
state machine's definition file and substitutions, with CloudFormation intrinsics resolved against local values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class _CfnLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]  # libyaml's: 8x faster
    """YAML loader that turns CloudFormation short forms (!Ref, !GetAtt, !Sub, ...) into their long forms."""


def _construct_intrinsic(loader: _CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_intrinsic)


def load_template(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass


LAMBDA_ONLY_VARIABLES = {
    "MPLCONFIGDIR": "matplotlib's config and cache folder: Lambda's HOME is not writable, so template.yaml gives the "
                    "Aggregator one in /tmp; locally matplotlib keeps the user's own (their MPLCONFIGDIR, or "
                    "~/.config/matplotlib), which the engine's fork server has already used to import it "
                    "(granulemap/local/preload.py), and a shared /tmp/matplotlib may belong to another user",
}
"""Variables of a function's template environment that the local engine does not set, and why."""


@dataclass
class FunctionSpec:
    logical_id: str
    code_dir: str
    handler: str
    environment: dict[str, str]
    timeout: int
    memory_size: int
    arn: str = ""

    @property
    def function_name(self) -> str:
        return self.logical_id


@dataclass
class StateMachineSpec:
    logical_id: str
    definition_path: Path
    substitutions: dict[str, Any]


@dataclass
class LocalTemplate:
    root: Path
    functions: dict[str, FunctionSpec]
    state_machine: StateMachineSpec
    parameters: dict[str, str]
    raw: dict[str, Any] = field(repr=False)
    topics: dict[str, str] = field(default_factory=dict)
    """SNS topics (logical id → ARN), which the local engine creates: the state machine publishes to them."""


class Resolver:
    """Resolves Ref/GetAtt/Sub/If against local values. Unsupported intrinsics raise, naming themselves."""

    def __init__(self, refs: dict[str, str], attrs: dict[tuple[str, str], str], conditions: dict[str, Any]):
        self.refs = refs
        self.attrs = attrs
        self.conditions = conditions

    def condition(self, name: str) -> bool:
        return bool(self.value(self.conditions[name]))

    def value(self, node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                if arg not in self.refs:
                    raise KeyError(f"template.yaml: !Ref {arg} has no local value")
                return self.refs[arg]
            if key == "Fn::GetAtt":
                return self.attrs[(arg[0], arg[1])]
            if key == "Fn::Sub":
                return re.sub(r"\$\{([^}!]+)\}", lambda m: self._sub_var(m.group(1)), arg)
            if key == "Fn::If":
                name, yes, no = arg
                return self.value(yes if self.condition(name) else no)
            if key == "Fn::Equals":
                return str(self.value(arg[0])) == str(self.value(arg[1]))
            if key == "Fn::Not":
                return not self.value(arg[0])
            if key == "Fn::Or":
                return any(self.value(a) for a in arg)
            if key == "Fn::And":
                return all(self.value(a) for a in arg)
            if key == "Condition":
                return self.condition(arg)
            raise NotImplementedError(f"template.yaml: the local engine does not resolve {key}")
        if isinstance(node, bool):
            return "true" if node else "false"
        if isinstance(node, (int, float)):
            return str(node)
        return node

    def _sub_var(self, name: str) -> str:
        if "." in name:
            resource, attr = name.split(".", 1)
            return self.attrs[(resource, attr)]
        return self.refs[name]


def read_local_template(
    root: Path,
    bucket: str,
    region: str,
    account: str,
    stack_name: str,
    parameter_overrides: dict[str, str] | None = None,
) -> LocalTemplate:
    """Functions and state machine of ``root/template.yaml``, resolved for a local run."""
    raw = load_template(root / "template.yaml")
    params = {name: str(spec.get("Default", "")) for name, spec in raw.get("Parameters", {}).items()}
    params.update(parameter_overrides or {})
    resources: dict[str, Any] = raw["Resources"]
    functions = {
        lid: r for lid, r in resources.items() if r["Type"] == "AWS::Serverless::Function"
    }
    arns = {lid: f"arn:aws:lambda:{region}:{account}:function:{lid}" for lid in functions}
    refs = {
        **params,
        "AWS::StackName": stack_name,
        "AWS::Region": region,
        "AWS::AccountId": account,
        "AWS::Partition": "aws",
        **{lid: lid for lid in functions},
        # The version a deploy published (Globals: AutoPublishAlias): locally, nothing is deployed during a run, and
        # the function is its one version.
        **{f"{lid}.Version": arn for lid, arn in arns.items()},
    }
    attrs: dict[tuple[str, str], str] = {(lid, "Arn"): arn for lid, arn in arns.items()}
    topics = {}
    for lid, r in resources.items():
        if r["Type"] == "AWS::S3::Bucket":
            refs[lid] = bucket
            attrs[(lid, "Arn")] = f"arn:aws:s3:::{bucket}"
        elif r["Type"] == "AWS::SNS::Topic":
            refs[lid] = topics[lid] = f"arn:aws:sns:{region}:{account}:{stack_name}-{lid}"
    resolver = Resolver(refs, attrs, raw.get("Conditions", {}))
    globals_fn = raw.get("Globals", {}).get("Function", {})
    global_env = globals_fn.get("Environment", {}).get("Variables", {})
    specs = {}
    for lid, r in functions.items():
        props = r["Properties"]
        env = {**global_env, **props.get("Environment", {}).get("Variables", {})}
        specs[lid] = FunctionSpec(
            logical_id=lid,
            code_dir=str((root / props["CodeUri"]).resolve()),
            handler=props.get("Handler", globals_fn.get("Handler", "app.handler")),
            environment={k: str(resolver.value(v)) for k, v in env.items() if k not in LAMBDA_ONLY_VARIABLES},
            timeout=int(resolver.value(props.get("Timeout", globals_fn.get("Timeout", 3)))),
            memory_size=int(resolver.value(props.get("MemorySize", globals_fn.get("MemorySize", 128)))),
            arn=arns[lid],
        )
    (sm_id, sm), = [(lid, r) for lid, r in resources.items() if r["Type"] == "AWS::Serverless::StateMachine"]
    subs = {k: resolver.value(v) for k, v in sm["Properties"].get("DefinitionSubstitutions", {}).items()}
    return LocalTemplate(
        root=root,
        functions=specs,
        state_machine=StateMachineSpec(sm_id, root / sm["Properties"]["DefinitionUri"], subs),
        parameters=params,
        raw=raw,
        topics=topics,
    )


def substitute_definition(text: str, substitutions: dict[str, Any]) -> str:
    """What SAM does with DefinitionSubstitutions: replace each ${Name} that has a value."""
    return re.sub(
        r"\$\{([A-Za-z0-9_]+)\}",
        lambda m: str(substitutions[m.group(1)]) if m.group(1) in substitutions else m.group(0),
        text,
    )
