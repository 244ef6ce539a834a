import sys

from llmwatch.cli import main

sys.exit(main())
