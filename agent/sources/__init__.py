"""The practice database and its sources: the canonical practice tables
(:mod:`agent.sources.schema`), opening and writing a store (:mod:`agent.sources.store`), synthetic
practices (:mod:`agent.sources.synth`), and the readers that map the records practices really
have onto those tables: CSV extracts, FHIR R4 (bulk ndjson and Bundles), OMOP CDM 5.4 in place;
and ``check-source``. See docs/data-model.md, docs/sources.md, docs/synthetic.md.

    load_csv(directory, engine, date_format="iso") -> LoadReport     (agent.sources.csv_extract)
    load_fhir(path, engine) -> LoadReport                             (agent.sources.fhir)
    open_omop(url, codes="standard", ...) -> Engine                   (agent.sources.omop)
    check_source(engine, catalogue, today) -> SourceCheck             (agent.sources.check)
"""
