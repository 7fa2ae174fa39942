# The AWS side: the skills bucket, and the RDS database when database_mode = "rds".

module "aws" {
  source = "./modules/aws"

  name               = var.namespace
  skills_bucket_name = var.skills_bucket_name

  create_database      = var.database_mode == "rds"
  vpc_id               = var.rds_vpc_id
  subnet_ids           = var.rds_subnet_ids
  allowed_cidr_blocks  = var.rds_allowed_cidr_blocks
  database_name        = var.database_name
  database_username    = var.database_username
  database_password    = random_password.database.result
  instance_class       = var.rds_instance_class
  allocated_storage_gb = var.rds_allocated_storage_gb
  engine_version       = var.rds_engine_version
  multi_az             = var.rds_multi_az
  deletion_protection  = var.rds_deletion_protection
}
