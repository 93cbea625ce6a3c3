"""Readers that map the records practices really have onto the canonical practice tables
(:mod:`agent.schema`): CSV extracts, FHIR R4 (bulk ndjson and Bundles), OMOP CDM 5.4 in place;
and ``check-source``. See docs/sources.md.

    load_csv(directory, engine, date_format="iso") -> LoadReport     (agent.sources.csv_extract)
    load_fhir(path, engine) -> LoadReport                             (agent.sources.fhir)
    open_omop(url, codes="standard", ...) -> Engine                   (agent.sources.omop)
    check_source(engine, catalogue, today) -> SourceCheck             (agent.sources.check)
"""
