"""A second JSON Schema implementation's verdicts, for tests/tests/all/schemas_second_opinion.rs.

Reads a JSON array of documents on stdin, validates each against the schema file named
by the first argument with Python's `jsonschema` package (the validator class the
schema's `$schema` names, Draft 2020-12 here), and prints a JSON array of booleans.
"""

import json
import sys

import jsonschema


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        schema = json.load(f)
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    documents = json.load(sys.stdin)
    json.dump([validator.is_valid(document) for document in documents], sys.stdout)


if __name__ == "__main__":
    main()
