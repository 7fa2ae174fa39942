# Skill packages (admin function: name, version, sha256): versioned, encrypted, never public.

resource "aws_s3_bucket" "skills" {
  bucket = var.skills_bucket_name
}

resource "aws_s3_bucket_ownership_controls" "skills" {
  bucket = aws_s3_bucket.skills.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_versioning" "skills" {
  bucket = aws_s3_bucket.skills.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "skills" {
  bucket = aws_s3_bucket.skills.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "aws:kms"
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "skills" {
  bucket = aws_s3_bucket.skills.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}
