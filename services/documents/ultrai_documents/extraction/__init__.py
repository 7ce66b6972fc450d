"""Type detection and text extraction, run in the sandbox process (sandbox.py) one file at a time.

``extract.extract_file`` detects the type (detection.py) and hands the file to its format's module
(pdf.py, docx.py, text.py); chunking.py cuts the text into token-aware chunks. Nothing in this
package imports the service's settings or ``shared``: the sandbox starts fast and holds no secrets.
"""
