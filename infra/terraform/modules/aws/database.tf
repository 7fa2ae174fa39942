# PostgreSQL on RDS, reachable only from the networks given, encrypted, backed up.

locals {
  database_count = var.create_database ? 1 : 0
}

resource "aws_db_subnet_group" "vwm" {
  count = local.database_count

  name       = "${var.name}-database"
  subnet_ids = var.subnet_ids
}

resource "aws_security_group" "database" {
  count = local.database_count

  name        = "${var.name}-database"
  description = "PostgreSQL for VWM, from the cluster only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "postgres" {
  for_each = var.create_database ? toset(var.allowed_cidr_blocks) : toset([])

  security_group_id = aws_security_group.database[0].id
  description       = "PostgreSQL from ${each.value}"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 5432
  to_port           = 5432
}

resource "aws_db_parameter_group" "vwm" {
  count = local.database_count

  name   = "${var.name}-postgres${var.engine_version}"
  family = "postgres${var.engine_version}"

  # RDS for PostgreSQL 15+ refuses plain connections by default, and the control plane's
  # driver (pg8000) takes TLS settings only in code, not from the database URL. Until it can,
  # connections stay plain, inside the VPC and from the allowed networks only.
  parameter {
    name  = "rds.force_ssl"
    value = "0"
  }
}

resource "aws_db_instance" "vwm" {
  count = local.database_count

  identifier     = "${var.name}-database"
  engine         = "postgres"
  engine_version = var.engine_version
  instance_class = var.instance_class

  db_name  = var.database_name
  username = var.database_username
  password = var.database_password

  allocated_storage     = var.allocated_storage_gb
  max_allocated_storage = var.allocated_storage_gb * 4
  storage_type          = "gp3"
  storage_encrypted     = true

  db_subnet_group_name   = aws_db_subnet_group.vwm[0].name
  vpc_security_group_ids = [aws_security_group.database[0].id]
  parameter_group_name   = aws_db_parameter_group.vwm[0].name
  publicly_accessible    = false
  multi_az               = var.multi_az

  backup_retention_period   = var.backup_retention_days
  deletion_protection       = var.deletion_protection
  skip_final_snapshot       = false
  final_snapshot_identifier = "${var.name}-database-final"
  copy_tags_to_snapshot     = true

  auto_minor_version_upgrade  = true
  allow_major_version_upgrade = false
  apply_immediately           = false

  lifecycle {
    precondition {
      condition     = var.database_password != null && length(var.subnet_ids) >= 2 && var.vpc_id != null
      error_message = "An RDS database needs a password, a VPC and subnets in at least two availability zones."
    }
  }
}
