"""The packaged template (StackSets, the console) fits CloudFormation's quota for a
template read from S3, and the README deploys it that way, not as a request body."""

import re
import unittest
from pathlib import Path

import package

ROOT = Path(__file__).resolve().parent.parent


class PackagedTemplate(unittest.TestCase):
    def test_fits_the_quota_for_a_template_read_from_s3(self):
        text = package.render((ROOT / "template.yaml").read_text(), "reverse-privatelink/bootstrap.zip")
        self.assertLessEqual(len(text.encode()), package.TEMPLATE_URL_QUOTA)

    def test_an_oversized_template_is_refused(self):
        padding = "x" * package.TEMPLATE_URL_QUOTA
        source = (ROOT / "template.yaml").read_text() + f"Mappings:\n  Padding:\n    Padding:\n      Value: {padding}\n"
        with self.assertRaisesRegex(ValueError, "reads at most"):
            package.render(source, "reverse-privatelink/bootstrap.zip")

    def test_the_readme_passes_the_template_by_url(self):
        readme = (ROOT / "README.md").read_text()
        self.assertNotIn("--template-body", readme, "the template is over CloudFormation's 51,200-byte body quota")
        stacksets = readme[readme.index("### 2. Many producer accounts with StackSets") : readme.index("### 3. Console")]
        self.assertRegex(stacksets, re.compile(r"create-stack-set[^`]*--template-url https://\S+/reverse-privatelink\.yaml"))
        self.assertIn("aws s3 cp dist/reverse-privatelink.yaml", stacksets)


if __name__ == "__main__":
    unittest.main()
