"""Training: transfer learning (``trainer``) on labeled folders (``dataset``), ``evaluate``
through the inference engine, and the PNG charts both draw (``plots``)."""
