"""Where scans come from: a folder read in place, or a PACS queried and pulled over DICOMweb or DIMSE.

location.py parses a source URI; credentials.py reads secrets from the environment; query.py says what to pull;
remote.py (+ dicomweb.py, dimse.py) speaks to the PACS; pull.py stages series in bounded batches; state.py keeps
the watermark of what a consumer has finished. Ingest (medtl.ingest.from_pacs) and scoring
(medtl.scoring.from_pacs) are the consumers.
"""
