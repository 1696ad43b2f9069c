"""The LLM planner's format (LLMCompiler's): numbered tool calls with `$N` references, and a
final `join()`. Pure: a prompt is built from the tools, a reply is parsed into a `Plan` or
rejected with a `PlanError` that says what is wrong, so the model can be asked again.

    1. lookup(source="arxiv", query="actor runtimes")
    2. lookup(source="blogs", query="actor runtimes")
    Thought: both are needed for the answer.
    3. synthesize(goal="actor runtimes", findings=[$1, $2])
    4. join()
"""

from __future__ import annotations

import ast
import re
from typing import Any

from agentrt.protocols import AgentSkill, Plan, PlanError, PlanTask, SkillContract, validate_plan

Tool = tuple[AgentSkill, SkillContract]
"""A skill the planner may use: as A2A describes it, and its schemas (the card's contract)."""

SYSTEM = """You are the planner of a multi-agent runtime. Turn the user's goal into a plan of \
tool calls that can run in parallel wherever they do not depend on each other.

Write one action per line, numbered from 1, in exactly this form:
N. tool_name(arg1=value1, arg2=value2)
Values are JSON literals (strings in double quotes, numbers, true/false/null, lists, objects) \
or $K, the output of action K. Use keyword arguments only. Only refer to earlier actions. \
You may write lines starting with "Thought:" between actions. End with the line:
N. join()
The action just before join() produces the final answer. Write nothing else."""

_ACTION = re.compile(r"^\s*(\d+)\s*\.\s*([A-Za-z_][\w\-]*)\s*\((.*)\)\s*$")
_REF = re.compile(r"\$\{?(\d+)\}?")
_LITERAL_NAMES = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}


def describe_tools(tools: dict[str, Tool]) -> str:
    """The tools as the prompt lists them: name, arguments (required ones marked), what it does."""
    lines = []
    for name, (s, contract) in sorted(tools.items()):
        props = (contract.input_schema or {}).get("properties", {})
        required = set((contract.input_schema or {}).get("required", []))
        args = ", ".join(
            f"{p}{'' if p in required else '?'}: {spec.get('type', 'any')}" for p, spec in props.items()
        )
        # What the plan's scheduling makes of it, so the model can fan out the safe calls.
        note = " (read-only)" if contract.read_only else " (destructive: waits for a person's approval)" if "destructive" in s.tags else ""
        lines.append(f"- {name}({args}): {s.description or s.name}{note}")
    return "\n".join(lines)


def prompt(goal: str, tools: dict[str, Tool]) -> str:
    return f"Goal: {goal}\n\nTools:\n{describe_tools(tools)}"


def _value(node: ast.expr, where: str) -> Any:
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, str | int | float | bool)):
        return node.value
    if isinstance(node, ast.Name):
        ref = re.fullmatch(r"__ref_(\d+)", node.id)
        if ref:
            return f"${{t{ref.group(1)}}}"
        if node.id in _LITERAL_NAMES:
            return _LITERAL_NAMES[node.id]
        raise PlanError(f"{where}: '{node.id}' is neither a JSON literal nor a $N reference")
    if isinstance(node, ast.List | ast.Tuple):
        return [_value(v, where) for v in node.elts]
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values, strict=True):
            key = _value(k, where) if k is not None else None
            if not isinstance(key, str):
                raise PlanError(f"{where}: object keys must be strings")
            out[key] = _value(v, where)
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        return -node.operand.value  # type: ignore[operator]
    raise PlanError(f"{where}: '{ast.unparse(node)}' is not a JSON literal or a $N reference")


def _check_args(where: str, tool: str, args: dict[str, Any], schema: dict[str, Any] | None) -> None:
    if not schema:
        return
    props = schema.get("properties", {})
    missing = [r for r in schema.get("required", []) if r not in args]
    if missing:
        raise PlanError(f"{where}: {tool}() misses required argument(s) {', '.join(missing)}")
    if schema.get("additionalProperties") is False:
        unknown = [a for a in args if a not in props]
        if unknown:
            raise PlanError(
                f"{where}: {tool}() has no argument(s) {', '.join(unknown)}; it takes {', '.join(props) or 'none'}"
            )


def parse(text: str, goal: str, tools: dict[str, Tool]) -> Plan:
    """The plan in `text`, or a PlanError naming the action and what is wrong with it
    (unknown tool, bad syntax, a reference to no action, a cycle, no join)."""
    tasks: list[PlanTask] = []
    seen: set[int] = set()
    joined = False
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.lower().startswith("thought") or stripped.startswith("```"):
            continue
        m = _ACTION.match(stripped)
        if m is None:
            raise PlanError(f"line {lineno}: '{stripped[:80]}' is not 'N. tool(arg=value, ...)'")
        n, tool, raw_args = int(m.group(1)), m.group(2), m.group(3)
        where = f"action {n}"
        if joined:
            raise PlanError(f"{where}: actions after join() are not allowed")
        if n in seen:
            raise PlanError(f"{where}: the number {n} is used twice")
        seen.add(n)
        if tool == "join":
            joined = True
            continue
        if tool not in tools:
            raise PlanError(f"{where}: unknown tool '{tool}'; the tools are {', '.join(sorted(tools))}")
        source = "f(" + _REF.sub(r"__ref_\1", raw_args) + ")"
        try:
            call = ast.parse(source, mode="eval").body
        except SyntaxError as exc:
            raise PlanError(f"{where}: the arguments do not parse ({exc.msg})") from None
        assert isinstance(call, ast.Call)
        if call.args:
            raise PlanError(f"{where}: use keyword arguments (name=value), not positional ones")
        args = {kw.arg: _value(kw.value, where) for kw in call.keywords if kw.arg is not None}
        _check_args(where, tool, args, tools[tool][1].input_schema)
        refs = sorted({int(r) for r in _REF.findall(raw_args)})
        for r in refs:
            if r == n:
                raise PlanError(f"{where}: refers to its own output ${r}")
        tasks.append(PlanTask(id=f"t{n}", skill=tool, args=args, deps=[f"t{r}" for r in refs]))
    if not tasks:
        raise PlanError("the plan has no actions")
    if not joined:
        raise PlanError("the plan does not end with join()")
    ids = {t.id for t in tasks}
    for t in tasks:
        for d in t.deps:
            if d not in ids:
                raise PlanError(f"action {t.id[1:]}: refers to ${d[1:]}, which is no action of the plan")
    plan = Plan(goal=goal, tasks=tasks, final=tasks[-1].id)
    validate_plan(plan)  # cycles (a forward reference can close one), named by their tasks
    return plan
