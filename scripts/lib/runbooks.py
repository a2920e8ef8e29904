#!/usr/bin/python3
"""The runbooks' drill blocks (docs/runbooks/README.md, "Marking blocks"), for scripts/drills.

  runbooks.py blocks DOCS_DIR DRILL STEP     the blocks as JSON: [{file, line, body, expect}]
  runbooks.py drills DOCS_DIR                every drill name with its file and steps
  runbooks.py match EXPECT_FILE OUTPUT_FILE  does the output show the expected lines? (exit 1)
  runbooks.py check DOCS_DIR RULES_FILE DRILL...
                                             static checks, no services needed (exit 1 on
                                             a problem): every runbook has its four parts,
                                             every drill named has diagnose and verify blocks
                                             and every drill in the docs is named, every
                                             runbook_url of the rules points at an existing
                                             file and anchor; alert names that differ between
                                             the runbooks and the rules are listed

Expected output uses the rules of docs/quickstart.md and scripts/docs-test: every non-empty
line must appear in order, `...` matches anything.
Standard library only.
"""

import json
import pathlib
import re
import sys

FENCE = re.compile(r"^(?P<indent>\s*)(?P<ticks>`{3,})(?P<lang>[\w-]*)(?P<info>[^`]*)$")
ATTR = re.compile(r"(\w+)=(\S+)")
SECTIONS = ("Symptoms", "Diagnosis", "Resolution", "Verification")


def fenced_blocks(text):
    """(line number, lang, attributes, body) for each fenced block, indentation removed."""
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, start = len(m.group("indent")), i + 1
        # Closed by a fence of the same length: a ```` block may show ``` blocks inside.
        close = re.compile(r"^\s*" + m.group("ticks") + r"\s*$")
        body = []
        i += 1
        while i < len(lines) and not close.match(lines[i]):
            line = lines[i]
            body.append(line[indent:] if line[:indent].strip() == "" else line)
            i += 1
        attrs = dict(ATTR.findall(m.group("info")))
        out.append((start, m.group("lang"), attrs, "\n".join(body) + "\n", i))
        i += 1
    return out


def drill_blocks(docs):
    """Every drill block: {file, line, drill, step, body, expect}."""
    found = []
    for path in sorted(pathlib.Path(docs).glob("*.md")):
        if path.name == "README.md":
            continue  # its examples are not drills
        blocks = fenced_blocks(path.read_text())
        text_lines = path.read_text().splitlines()
        for n, (line, lang, attrs, body, end) in enumerate(blocks):
            if lang != "sh" or "drill" not in attrs:
                continue
            expect = None
            if n + 1 < len(blocks) and blocks[n + 1][1] == "text":
                between = text_lines[end + 1 : blocks[n + 1][0] - 1]
                if all(not l.strip() for l in between):
                    expect = blocks[n + 1][3]
            found.append({
                "file": path.name, "line": line, "drill": attrs["drill"],
                "step": attrs.get("step", ""), "body": body, "expect": expect,
            })
    return found


def matches(expected, line):
    pattern = ".*".join(re.escape(part) for part in expected.strip().split("..."))
    return re.search(pattern, line) is not None


def check_output(expected, output):
    """None when every expected line appears in order, else the first one missing."""
    lines = output.splitlines()
    at = 0
    for want in [l.rstrip() for l in expected.splitlines() if l.strip()]:
        while at < len(lines) and not matches(want, lines[at]):
            at += 1
        if at == len(lines):
            return want
        at += 1
    return None


def slug(heading):
    """GitHub's anchor for a heading."""
    text = re.sub(r"<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text):
    found = set(re.findall(r'<a id="([^"]+)"', text))
    for line in text.splitlines():
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            found.add(slug(m.group(1)))
    return found


def rules_alerts(rules_file):
    """[(alert, runbook_url)] read without a YAML library (the file is plain block YAML)."""
    alerts, current = [], None
    for line in pathlib.Path(rules_file).read_text().splitlines():
        m = re.match(r"^\s*-\s*alert:\s*(\S+)", line)
        if m:
            current = m.group(1)
            alerts.append([current, None])
            continue
        m = re.match(r"^\s*runbook_url:\s*['\"]?([^'\"\s]+)", line)
        if m and current:
            alerts[-1][1] = m.group(1)
    return [tuple(a) for a in alerts]


def cmd_check(docs, rules, drills):
    docs = pathlib.Path(docs)
    problems, notes = [], []
    for path in sorted(docs.glob("*.md")):
        if path.name == "README.md":
            continue
        headings = " ".join(re.findall(r"^#{1,6}\s+(.*)$", path.read_text(), re.M))
        for section in SECTIONS:
            if section not in headings:
                problems.append(f"{path.name}: no heading with {section!r}")
    blocks = drill_blocks(docs)
    in_docs = {b["drill"] for b in blocks}
    for drill in drills:
        steps = {b["step"] for b in blocks if b["drill"] == drill}
        for step in ("diagnose", "verify"):
            if step not in steps:
                problems.append(f"drill {drill}: no `sh drill={drill} step={step}` block")
    for drill in sorted(in_docs - set(drills)):
        problems.append(f"drill {drill} is in the runbooks but scripts/drills does not run it")
    for b in blocks:
        if b["step"] not in ("diagnose", "resolve", "verify"):
            problems.append(f"{b['file']}:{b['line']}: step={b['step']!r} (diagnose|resolve|verify)")
    # Links between the pages (and to their anchors) resolve.
    for path in sorted(docs.glob("*.md")):
        for target, anchor in re.findall(r"\]\(([\w.-]+\.md)?(?:#([\w-]+))?\)", path.read_text()):
            if not target and not anchor:
                continue
            page = docs / target if target else path
            if not page.exists():
                if not (docs / ".." / target).exists():
                    problems.append(f"{path.name}: link to {target}: no such page")
                continue
            if anchor and anchor not in anchors(page.read_text()):
                problems.append(f"{path.name}: link to {target or ''}#{anchor}: no such anchor")
    readme = (docs / "README.md").read_text()
    named = set(re.findall(r"\bKeymesh[A-Z0-9][A-Za-z0-9]+\b", readme))
    if rules and pathlib.Path(rules).exists():
        ruled = rules_alerts(rules)
        names = {a for a, _ in ruled}
        for alert, url in ruled:
            if not url:
                problems.append(f"rules: {alert} has no runbook_url")
                continue
            m = re.match(r"^docs/runbooks/([^#]+)(?:#(.+))?$", url)
            if not m:
                problems.append(f"rules: {alert} runbook_url {url} is not under docs/runbooks/")
                continue
            target = docs / m.group(1)
            if not target.exists():
                problems.append(f"rules: {alert} runbook_url {url}: no such runbook")
            elif m.group(2) and m.group(2) not in anchors(target.read_text()):
                problems.append(f"rules: {alert} runbook_url {url}: no such anchor")
        for name in sorted(named - names):
            problems.append(f"alert {name} (docs/runbooks/README.md) is not in {rules}")
        for name in sorted(names - named):
            problems.append(f"alert {name} ({rules}) is not in docs/runbooks/README.md's index")
    else:
        notes.append(f"no rules file at {rules}: runbook_url targets not checked")
    for note in notes:
        print(f"note: {note}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print(f"runbooks: {len(blocks)} drill blocks in {len(in_docs)} drills; "
          f"{len(problems)} problem(s), {len(notes)} note(s)")
    return 1 if problems else 0


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd = argv[1]
    if cmd == "blocks" and len(argv) == 5:
        blocks = [b for b in drill_blocks(argv[2]) if b["drill"] == argv[3] and b["step"] == argv[4]]
        print(json.dumps(blocks))
        return 0
    if cmd == "drills" and len(argv) == 3:
        seen = {}
        for b in drill_blocks(argv[2]):
            seen.setdefault(b["drill"], [b["file"], []])[1].append(b["step"])
        for drill, (file, steps) in sorted(seen.items()):
            counts = ", ".join(f"{steps.count(s)} {s}" for s in ("diagnose", "resolve", "verify"))
            print(f"{drill:18} {file:26} {counts}")
        return 0
    if cmd == "match" and len(argv) == 4:
        missing = check_output(pathlib.Path(argv[2]).read_text(),
                               pathlib.Path(argv[3]).read_text(errors="replace"))
        if missing is not None:
            print(f"expected a line like {missing!r} (in order)")
            return 1
        return 0
    if cmd == "check" and len(argv) >= 4:
        return cmd_check(argv[2], argv[3], argv[4:])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
